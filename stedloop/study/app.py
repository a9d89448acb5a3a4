"""The study web app (FastAPI): blinded study mode, labelling mode, and the live session view.

Blinding: the browser only ever receives opaque tokens, the two scores as equal-precision
strings in the trial's random order, and a server-rendered PNG. The study set's file names,
which score is the network's, and the system (network or random baseline) stay on the server.
The study mode exposes no results page: reports are made offline with ``stedloop study report``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from stedloop.errors import DataError
from stedloop.study.render import DEFAULT_PIXEL_SIZE_NM, render_png
from stedloop.study.store import StudyStore, Tester, Trial
from stedloop.study.studyset import StudySet, read_image_2d

STATIC_DIR = Path(__file__).parent / "static"
COOKIE = "stedloop_tester"
#: Both scores are shown with the same number of decimals: a longer network score (0.734129)
#: next to a rounder expert score (0.7) would give the answer away.
SCORE_DECIMALS = 2

Mode = Literal["study", "label", "live"]

_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


class StartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)


class AnswerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    trial: str = Field(min_length=1, max_length=64)
    choice: Literal["first", "second", "equivalent", "discard"]


class _PngCache:
    """A small LRU of rendered PNGs keyed by row index (rendering costs a few ms)."""

    def __init__(self, size: int = 64) -> None:
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], bytes]) -> bytes:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        png = make()
        with self._lock:
            self._items[key] = png
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return png


def _page(name: str) -> FileResponse:
    return FileResponse(STATIC_DIR / name, headers=_NO_STORE, media_type="text/html")


def _trial_view(store: StudyStore, tester: Tester) -> dict[str, Any]:
    """What the browser gets for the tester's current state: nothing that unblinds."""
    trial: Trial | None = store.current_trial(tester)
    answered, total = store.progress(tester)
    view: dict[str, Any] = {"tester": tester.name, "answered": answered, "total": total}
    if trial is None:
        view["done"] = True
        view["trial"] = None
        return view
    first, second = trial.shown_scores()
    view["done"] = False
    view["trial"] = {
        "token": trial.token,
        "image": f"/img/{trial.token}.png",
        "scores": [f"{first:.{SCORE_DECIMALS}f}", f"{second:.{SCORE_DECIMALS}f}"],
    }
    return view


def _add_study_routes(
    app: FastAPI, study: StudySet, store: StudyStore, pixel_size_nm: float
) -> None:
    cache = _PngCache()

    def tester_or_404(token: str) -> Tester:
        tester = store.tester_by_token(token)
        if tester is None:
            raise HTTPException(404, "unknown session; start again with your name")
        return tester

    @app.get("/", include_in_schema=False)
    def index(request: Request) -> Response:
        token = request.cookies.get(COOKIE)
        if token and store.tester_by_token(token) is not None:
            return RedirectResponse(f"/t/{token}", status_code=303)
        return _page("study.html")

    @app.get("/t/{token}", include_in_schema=False)
    def session_page(token: str) -> Response:
        tester_or_404(token)
        return _page("study.html")

    @app.post("/api/study/start")
    def start(body: StartRequest) -> JSONResponse:
        tester = store.start_or_resume(body.name, study)
        response = JSONResponse({"session": tester.token}, headers=_NO_STORE)
        response.set_cookie(COOKIE, tester.token, httponly=True, samesite="strict")
        return response

    @app.get("/api/study/{token}/trial")
    def current(token: str) -> JSONResponse:
        return JSONResponse(_trial_view(store, tester_or_404(token)), headers=_NO_STORE)

    @app.post("/api/study/{token}/answer")
    def answer(token: str, body: AnswerRequest) -> JSONResponse:
        tester = tester_or_404(token)
        try:
            store.answer(tester, body.trial, body.choice)
        except DataError as exc:
            # Stale page or double click: say so and send the real current state.
            return JSONResponse(
                {"error": str(exc), **_trial_view(store, tester)},
                status_code=409,
                headers=_NO_STORE,
            )
        return JSONResponse(_trial_view(store, tester), headers=_NO_STORE)

    @app.get("/img/{trial_token}.png", include_in_schema=False)
    def image(trial_token: str) -> Response:
        trial = store.trial_by_token(trial_token)
        if trial is None:
            raise HTTPException(404, "no such image")
        row = study.rows[trial.row_index]
        png = cache.get(
            row.index, lambda: render_png(read_image_2d(study.image_path(row)), pixel_size_nm)
        )
        return Response(png, media_type="image/png", headers=_NO_STORE)


def create_app(
    *,
    mode: Mode = "study",
    study: StudySet | None = None,
    store: StudyStore | None = None,
    label_source: Path | None = None,
    label_out: Path | None = None,
    label_structure: str = "unknown",
    live_address: str | None = None,
    live_event_address: str | None = None,
    pixel_size_nm: float = DEFAULT_PIXEL_SIZE_NM,
) -> FastAPI:
    """Build the app for one mode; the live view is added when ``live_address`` is given."""
    app = FastAPI(title="stedloop study", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(DataError)
    def _data_error(_request: Request, exc: DataError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=400, headers=_NO_STORE)

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        path = STATIC_DIR / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise HTTPException(404, "not found")
        return FileResponse(path, headers=_NO_STORE)

    if mode == "study":
        if study is None or store is None:
            raise DataError("study mode needs a study set and an answer database")
        store.bind(study)
        _add_study_routes(app, study, store, pixel_size_nm)
    elif mode == "label":
        if label_source is None or label_out is None or store is None:
            raise DataError("label mode needs a folder of images, an output folder and a database")
        from stedloop.study.labelling import add_label_routes

        add_label_routes(
            app,
            label_source,
            label_out,
            store,
            structure=label_structure,
            pixel_size_nm=pixel_size_nm,
        )
    elif mode == "live":
        if live_address is None:
            raise DataError("live mode needs the daemon's address (--connect tcp://host:port)")

        @app.get("/", include_in_schema=False)
        def index() -> Response:
            return RedirectResponse("/live", status_code=303)
    else:
        raise DataError(f"unknown mode {mode!r}; expected study, label or live")

    if live_address is not None:
        from stedloop.study.live import add_live_routes

        add_live_routes(app, live_address, live_event_address)
    return app
