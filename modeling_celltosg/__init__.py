"""CellTOSG-FM in the Hugging Face remote-code layout.

Importing this package registers the model with the `transformers` Auto classes (`AutoConfig`,
`AutoModel`, `AutoModelForPreTraining`, `AutoModelForSequenceClassification`) and marks every class
for `auto_map`, so a folder written by `save_pretrained` carries the Python files and loads with
`trust_remote_code=True` even where this package is not installed.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
)

from .configuration_celltosg import CellTOSGConfig
from .gat_conv import SharedGATConv
from .gatv2_conv import SharedGATv2Conv
from .gcn_conv import SharedGCNConv
from .layers import build_shared_conv
from .modeling_celltosg import (
    CellTOSGCellClassifierOutput,
    CellTOSGForCellClassification,
    CellTOSGForPreTraining,
    CellTOSGForPreTrainingOutput,
    CellTOSGModel,
    CellTOSGModelOutput,
    CellTOSGPreTrainedModel,
    protein_log_degree,
)
from .tosg_graph import TOSGGraph, ppi_directed
from .transformer_conv import SharedTransformerConv

AutoConfig.register(CellTOSGConfig.model_type, CellTOSGConfig, exist_ok=True)
_AUTO_CLASSES = {
    "AutoModel": (AutoModel, CellTOSGModel),
    "AutoModelForPreTraining": (AutoModelForPreTraining, CellTOSGForPreTraining),
    "AutoModelForSequenceClassification": (AutoModelForSequenceClassification, CellTOSGForCellClassification),
}
CellTOSGConfig.register_for_auto_class("AutoConfig")
for _name, (_auto, _model) in _AUTO_CLASSES.items():
    _auto.register(CellTOSGConfig, _model, exist_ok=True)
    _model.register_for_auto_class(_name)

__all__ = [
    "CellTOSGConfig",
    "CellTOSGModel",
    "CellTOSGModelOutput",
    "CellTOSGPreTrainedModel",
    "CellTOSGForPreTraining",
    "CellTOSGForPreTrainingOutput",
    "CellTOSGForCellClassification",
    "CellTOSGCellClassifierOutput",
    "TOSGGraph",
    "ppi_directed",
    "SharedGCNConv",
    "SharedGATConv",
    "SharedGATv2Conv",
    "SharedTransformerConv",
    "build_shared_conv",
    "protein_log_degree",
]
