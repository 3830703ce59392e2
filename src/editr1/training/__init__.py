"""Training: SFT and GCPO of the RRM, pure losses (`losses`), exact-resume checkpoints (`checkpoint`).

Import from the submodules (`from editr1.training.losses import gcpo_loss`); this package file
imports nothing, so importing one trainer never pulls in the others.
"""
