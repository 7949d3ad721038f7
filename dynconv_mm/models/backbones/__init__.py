"""Backbones whose convolutions follow each paper's placement of dynamic
convolutions (one class per base network, the dynamic conv an option)."""
