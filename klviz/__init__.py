"""klviz: see how far, and where, an RLHF policy has drifted from its SFT model."""

__version__ = "0.1.0"
