"""Attention modules and model integrations: how a layout reaches a model (PyTorch modules,
Hugging Face encoders and decoders, FlexAttention masks)."""
