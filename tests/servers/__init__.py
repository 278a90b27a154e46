"""Real loopback servers (aiohttp on 127.0.0.1) for tests and benchmarks.

``RangeServer`` is a CDN/S3-like range server with fault injection and bandwidth caps;
``HubServer`` speaks the Hugging Face Hub protocol (with its own CDN); ``CivitaiServer`` speaks
CivitAI REST v1 (with its own S3-like storage). Use them with ``async with`` in async tests or
through ``run_in_thread`` from sync code.
"""

from .base import LoopbackServer, RequestRecord, run_in_thread
from .civitai import CivitaiFile, CivitaiServer
from .hub import HubServer
from .ranges import Fault, RangeServer

__all__ = ["CivitaiFile", "CivitaiServer", "Fault", "HubServer", "LoopbackServer",
           "RangeServer", "RequestRecord", "run_in_thread"]
