"""The torch modules and integrations, how a layout reaches a model: DeepSpeed's
``SparseSelfAttention`` and ``BertSparseSelfAttention`` (``attention``, ``bert``, their kernel
paths in ``backends``), the Hugging Face utilities and decoder/encoder attention functions
(``hf``, ``hf_decoder``) and FlexAttention's block masks (``flex_mask``).

Import the submodules; nothing here imports torch until one is used.
"""
