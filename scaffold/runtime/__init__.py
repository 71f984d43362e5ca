# scaffold runtime 1: owned by scaffold, copied verbatim into each generated package.
# `scaffold update` replaces this folder (it never merges it): a hand edit here is kept
# aside as <file>.orig-<version> and reported. Change behaviour in backbone.py instead,
# by overriding methods of the subclass there.
"""The generic part of a generated backbone: typed, tested once in scaffold.

Imports nothing from the rest of scaffold (torch and timm only), so that a generated
package carries its own copy (``<package>/_runtime/``) and needs no scaffold install:
``backbone`` (ScaffoldBackbone), ``layouts`` (features as (B, C, H, W) maps),
``inputs`` (the forward's call), ``checkpoint`` (the pretrained filter).
"""

RUNTIME_VERSION = "1"
