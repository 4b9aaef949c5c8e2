"""A JupyterLab server setting for the live demo: kernel messages without Nagle's delay.

jupyter_server's kernel websocket leaves TCP's Nagle algorithm on.  A kernel answers
each message with several small websocket frames (status busy, the reply, status
idle); with Nagle on, each frame after the first waits for the browser's TCP
acknowledgement, which the browser's system may delay by up to 40 ms.  Every cell
and every widget message pays it, and the live panel, which sends the next camera
frame only after the kernel's answer, pays it on every frame.  Measured on this
project's machine: a trivial ``execute`` round trip from the page 48 ms → 15 ms.

``./kit lab`` starts JupyterLab with it; elsewhere::

    jupyter lab --ServerApp.kernel_websocket_connection_class=facekit.lab.NoDelayKernelConnection

(or ``c.ServerApp.kernel_websocket_connection_class = "facekit.lab.NoDelayKernelConnection"``
in ``jupyter_server_config.py``).  Nothing else changes: it is jupyter_server's own
connection class with ``TCP_NODELAY`` set on the websocket.
"""
from __future__ import annotations

from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection

#: The command-line flag that selects it (what ``./kit lab`` passes).
FLAG = "--ServerApp.kernel_websocket_connection_class=facekit.lab.NoDelayKernelConnection"


class NoDelayKernelConnection(ZMQChannelsWebsocketConnection):
    """jupyter_server's kernel websocket connection, with small messages sent at once (``TCP_NODELAY``)."""

    def connect(self):
        self.websocket_handler.set_nodelay(True)
        return super().connect()
