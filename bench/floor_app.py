"""The floor under the service's figures: uvicorn and FastAPI with one sync POST endpoint that
does nothing (run in the thread pool, as the service's are), so the table shows what the web
stack alone costs on this machine.

    python -m uvicorn bench.floor_app:app --port PORT
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response

app = FastAPI()
_ANSWER = b'{"ok":true}'


@app.post("/v1/sign")
def sign(request: Request) -> Response:
    return Response(_ANSWER, 200, media_type="application/json")
