"""Model zoo for training: models are built by name, as a config's "network" names them."""
import torch

from .classifiers import DeepFakeClassifier, DeepFakeClassifierSeq3D, TemporalConv3d, inflate_expansion_convs
from .distill import DeepFakeClassifierDistill
from .mds import DissonanceNet, mds_loss
from .realism import RealismRegressor, mean_std_pool
from .weights import create_encoder, lite0_weights_path, load_encoder_weights

MODELS: dict[str, type] = {
    "DeepFakeClassifier": DeepFakeClassifier,
    "DeepFakeClassifierSeq3D": DeepFakeClassifierSeq3D,
    "DeepFakeClassifierDistill": DeepFakeClassifierDistill,
    "RealismRegressor": RealismRegressor,
    "DissonanceNet": DissonanceNet,
}


def create_model(network: str, encoder: str, pretrained: bool | str | None = False,
                 dropout: float = 0.0, **kwargs) -> torch.nn.Module:
    """Build `MODELS[network]`; extra kwargs go to the model (seq_len, vit, size).

    pretrained: True downloads the encoder's weights through timm (online only), a path
    loads them from a local file, False/None leaves them random.
    """
    if network not in MODELS:
        raise ValueError(f"unknown network {network!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[network](encoder=encoder, pretrained=pretrained, dropout=dropout, **kwargs)


__all__ = ["MODELS", "create_model", "load_encoder_weights", "lite0_weights_path", "create_encoder",
           "DeepFakeClassifier", "DeepFakeClassifierSeq3D", "DeepFakeClassifierDistill",
           "RealismRegressor", "mean_std_pool", "DissonanceNet", "mds_loss", "TemporalConv3d", "inflate_expansion_convs"]
