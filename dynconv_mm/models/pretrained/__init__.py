"""Pretrained weights for the dynamic backbones: strict loading of our
checkpoints and of static networks' (through the static -> dynamic
initialiser), and the converter of the ODConv authors' checkpoints."""
from .checkpoint_layouts import (CLASSIFIER_PREFIXES, layout_renamings,
                                 unwrap_state_dict)
from .loading import (PretrainedInitMixin, PretrainedLoadReport,
                      load_pretrained, load_pretrained_state_dict)
from .odconv_authors import (ConversionReport,
                             convert_odconv_authors_checkpoint,
                             convert_odconv_authors_state_dict)
from .static_to_dynamic import (DEFAULT_PERTURBATION,
                                constant_attention_coefficients,
                                dynamic_bank_from_static,
                                init_dynamic_conv_from_static,
                                static_kernel_to_bank, zero_attention_heads)

__all__ = [
    'CLASSIFIER_PREFIXES', 'layout_renamings', 'unwrap_state_dict',
    'PretrainedInitMixin', 'PretrainedLoadReport', 'load_pretrained',
    'load_pretrained_state_dict', 'ConversionReport',
    'convert_odconv_authors_checkpoint', 'convert_odconv_authors_state_dict',
    'DEFAULT_PERTURBATION', 'constant_attention_coefficients',
    'dynamic_bank_from_static', 'init_dynamic_conv_from_static',
    'static_kernel_to_bank', 'zero_attention_heads'
]
