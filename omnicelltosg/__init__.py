"""OmniCellTOSG command line and end-to-end workflows (build → pretrain → fine-tune → signaling)."""
