"""Unload the ALSA plugin libraries that PortAudio's device scan loaded but the open stream does not use.

PortAudio's ALSA host API opens every PCM the ALSA configuration defines when it initialises (``import
sounddevice``), so the plugins of ``/etc/alsa/conf.d`` are loaded into the process: on a desktop-like Debian
with ``libasound2-plugins`` that is the ``a52``/``upmix``/``jack``/``speex`` plugins and, through them,
libavcodec and some sixty libraries it links (~11 MB resident, for devices a recorder never opens). alsa-lib
keeps them loaded until its global configuration is freed. Freeing it once our stream is open drops the
plugins nobody holds; the open PCM keeps its own plugin (alsa-lib counts its users) and a later
``snd_pcm_open`` reads the configuration again.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

LIBASOUND = "libasound.so.2"


def release_unused_plugins() -> bool:
    """Free alsa-lib's global configuration and unload the plugins no open PCM uses.

    Returns whether alsa-lib was loaded in this process (False elsewhere: nothing to do). Call it from the
    thread that opens streams, after the stream is open; never while another thread opens a device.
    """
    try:  # only a library that is already loaded (RTLD_NOLOAD): never load ALSA just to free it
        asound = ctypes.CDLL(LIBASOUND, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    except OSError:
        return False
    status = asound.snd_config_update_free_global()
    if status < 0:
        log.debug("snd_config_update_free_global returned %d", status)
    return True
