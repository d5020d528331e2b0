"""The torch modules and integrations: DeepSpeed's ``SparseSelfAttention`` and
``BertSparseSelfAttention`` (``attention``, ``bert``, their kernel paths in ``backends``), the
Hugging Face utilities (``hf``) and FlexAttention's block masks (``flex_mask``).

Import the submodules; nothing here imports torch until one is used.
"""
