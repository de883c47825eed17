"""Callbacks that attach `lrid.watch` to training frameworks (optional extras):
`lrid.integrations.lightning.LridCallback` (PyTorch Lightning, ``pip install lrid[lightning]``)
and `lrid.integrations.huggingface.LridCallback` (Hugging Face `Trainer`,
``pip install lrid[huggingface]``). Importing one needs its framework; the rest of lrid does not."""
