"""The OmniCellTOSG dataset: build it from raw single-cell data, describe it, load cohorts."""
