"""modelmgr: pull quantized diffusion-model bundles fast, prove every byte and every format.

Importing this package never imports torch, textual or diffusers; those live behind extras.
"""

__version__ = "0.1.0"
