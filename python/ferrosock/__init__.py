"""ferrosock: FastAPI-style WebSocket apps on a Rust engine."""

from . import status
from .applications import App
from .config import Config
from .exceptions import HTTPException, WebSocketDisconnect, WebSocketException
from .manager import ConnectionManager
from .params import Cookie, Depends, Header, Path, Query, Security
from .process import run
from .requests import Request
from .routing import APIRouter
from .websockets import WebSocket, WebSocketState

FastAPI = App

__all__ = [
    "APIRouter",
    "App",
    "Config",
    "ConnectionManager",
    "Cookie",
    "Depends",
    "FastAPI",
    "HTTPException",
    "Header",
    "Path",
    "Query",
    "Request",
    "Security",
    "WebSocket",
    "WebSocketDisconnect",
    "WebSocketException",
    "WebSocketState",
    "run",
    "status",
]

__version__ = "0.1.0"
