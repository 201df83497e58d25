"""An OpenAI-compatible chat server on transformers: runs anywhere, CPU included.

Run: python serve.py                      (http://127.0.0.1:8000/v1, model "lfc-model")
     python serve.py --serve_port 8001 --serve_host 0.0.0.0

GET /health, GET /v1/models and POST /v1/chat/completions (plain or `stream: true`), the
subset of the OpenAI API that chat clients use. It answers with the same model as chat.py:
exported/ when export.py has run, otherwise the base model plus the adapter; prompts are
rendered with chat_template.jinja and generation stops at the end of a turn. One request
generates at a time: for throughput on GPUs, serve with vLLM (serve_vllm.sh).
"""

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch
from jinja2 import TemplateError
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from config import parse_args
from model import load_for_inference, stop_token_ids

MAX_BODY_BYTES = 16 * 1024 * 1024
ROLES = ("system", "user", "assistant", "tool")


class RequestError(Exception):
    """A request the server refuses, with the HTTP status and OpenAI-style error body."""

    def __init__(
        self, status: HTTPStatus, message: str, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param

    def body(self) -> dict:
        kind = (
            "not_found_error"
            if self.status == HTTPStatus.NOT_FOUND
            else "invalid_request_error"
        )
        return {
            "error": {
                "message": self.message,
                "type": kind,
                "param": self.param,
                "code": None,
            }
        }


class Cancelled(StoppingCriteria):
    """Stops generation once the client has gone away."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self, input_ids, scores, **kwargs) -> bool:
        return self.event.is_set()


def _number(body: dict, key: str, default: float, low: float, high: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not low <= value <= high
    ):
        raise RequestError(
            HTTPStatus.BAD_REQUEST, f"{key} must be in [{low}, {high}]", key
        )
    return float(value)


def _messages(body: dict) -> list[dict]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(
            HTTPStatus.BAD_REQUEST, "messages must be a non-empty list", "messages"
        )
    turns = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise RequestError(
                HTTPStatus.BAD_REQUEST, f"{where}.role must be one of {ROLES}", where
            )
        content = message.get("content")
        if isinstance(content, list):  # content parts: only text is understood here
            if any(not isinstance(p, dict) or p.get("type") != "text" for p in content):
                raise RequestError(
                    HTTPStatus.BAD_REQUEST, f"{where}: only text parts", where
                )
            content = "".join(str(part.get("text", "")) for part in content)
        if not isinstance(content, str):
            raise RequestError(
                HTTPStatus.BAD_REQUEST, f"{where}.content must be text", where
            )
        turns.append({"role": message["role"], "content": content})
    return turns


def _stop_strings(body: dict) -> list[str]:
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if (
        not isinstance(stop, list)
        or len(stop) > 4
        or not all(isinstance(s, str) and s for s in stop)
    ):
        raise RequestError(
            HTTPStatus.BAD_REQUEST, "stop is a string or up to 4 strings", "stop"
        )
    return stop


def _cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """`text` up to the first stop string (which is left out), and whether one was found."""
    cuts = [text.index(s) for s in stop if s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


class ChatEngine:
    """The loaded model and tokenizer; one generation at a time."""

    def __init__(self, model, tokenizer, name: str, max_model_len: int | None) -> None:
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.max_model_len = max_model_len or model.config.max_position_embeddings
        self.stop_ids = stop_token_ids(tokenizer)
        self.lock = threading.Lock()

    def prepare(self, body: dict) -> dict:
        """Check a chat completion request; returns what `generate` needs."""
        if body.get("model", self.name) != self.name:
            raise RequestError(
                HTTPStatus.NOT_FOUND,
                f"The model `{body['model']}` does not exist.",
                "model",
            )
        for key in ("tools", "functions", "response_format"):
            if body.get(key):
                raise RequestError(
                    HTTPStatus.BAD_REQUEST, f"{key} is not supported here", key
                )
        if body.get("n", 1) != 1:
            raise RequestError(HTTPStatus.BAD_REQUEST, "n must be 1", "n")
        messages = _messages(body)
        try:
            prompt = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_dict=True
            )["input_ids"]
        except (
            TemplateError,
            KeyError,
            TypeError,
            ValueError,
        ) as exc:  # template refused
            raise RequestError(
                HTTPStatus.BAD_REQUEST, f"chat template: {exc}", "messages"
            ) from None
        room = self.max_model_len - len(prompt)
        if room < 1:
            raise RequestError(
                HTTPStatus.BAD_REQUEST,
                f"the prompt is {len(prompt)} tokens; this server's limit is {self.max_model_len}",
                "messages",
            )
        limit = body.get("max_completion_tokens", body.get("max_tokens")) or room
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 0 < limit <= room
        ):
            raise RequestError(
                HTTPStatus.BAD_REQUEST,
                f"max_tokens must be 1..{room} for this prompt",
                "max_tokens",
            )
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise RequestError(
                HTTPStatus.BAD_REQUEST, "seed must be an integer", "seed"
            )
        return {
            "prompt": prompt,
            "max_new_tokens": limit,
            "temperature": _number(body, "temperature", 1.0, 0.0, 2.0),
            "top_p": _number(body, "top_p", 1.0, 0.0, 1.0),
            "stop": _stop_strings(body),
            "seed": seed,
        }

    def _generate(
        self, request: dict, streamer=None, cancel: Cancelled | None = None
    ) -> list[int]:
        """The new token ids (ending with a stop id when the turn ended)."""
        prompt = torch.tensor([request["prompt"]])
        sampling: dict = {"do_sample": False}
        if request["temperature"] > 0:
            sampling = {"do_sample": True, "temperature": request["temperature"]}
            sampling["top_p"] = request["top_p"]
        if request["stop"]:
            sampling.update(stop_strings=request["stop"], tokenizer=self.tokenizer)
        if request["seed"] is not None:
            torch.manual_seed(request["seed"])
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=request["max_new_tokens"],
                eos_token_id=self.stop_ids,
                pad_token_id=self.tokenizer.pad_token_id,
                streamer=streamer,
                stopping_criteria=StoppingCriteriaList([cancel] if cancel else []),
                **sampling,
            )
        return output[0, prompt.shape[1] :].tolist()

    def _finish(self, new_ids: list[int], request: dict) -> tuple[str, str]:
        """The answer text and finish reason (stop: the turn ended or a stop string was hit)."""
        text = self.tokenizer.decode(new_ids, skip_special_tokens=True)
        text, hit = _cut_at_stop(text, request["stop"])
        ended = bool(new_ids) and new_ids[-1] in self.stop_ids
        return text, "stop" if ended or hit else "length"

    def _usage(self, request: dict, new_ids: list[int]) -> dict:
        prompt, completion = len(request["prompt"]), len(new_ids)
        total = prompt + completion
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": total,
        }

    def complete(self, request: dict) -> dict:
        with self.lock:
            new_ids = self._generate(request)
        text, reason = self._finish(new_ids, request)
        message = {"role": "assistant", "content": text}
        choice = {
            "index": 0,
            "message": message,
            "finish_reason": reason,
            "logprobs": None,
        }
        return {
            **_envelope(self.name, "chat.completion"),
            "choices": [choice],
            "usage": self._usage(request, new_ids),
        }

    def stream(self, request: dict, include_usage: bool) -> Iterator[dict]:
        """Chunks as the model writes; a possible start of a stop string is held back."""
        envelope = _envelope(self.name, "chat.completion.chunk")

        def chunk(delta: dict, reason: str | None = None) -> dict:
            return {
                **envelope,
                "choices": [{"index": 0, "delta": delta, "finish_reason": reason}],
            }

        streamer = TextIteratorStreamer(
            self.tokenizer, skip_prompt=True, skip_special_tokens=True
        )
        cancel, result = Cancelled(), {}
        hold = max((len(s) for s in request["stop"]), default=1) - 1
        with self.lock:
            worker = threading.Thread(
                target=lambda: result.update(
                    ids=self._generate(request, streamer, cancel)
                )
            )
            worker.start()
            try:
                yield chunk({"role": "assistant", "content": ""})
                text, sent = "", 0
                for piece in streamer:
                    text += piece
                    cut, hit = _cut_at_stop(text, request["stop"])
                    end = len(cut) if hit else max(sent, len(text) - hold)
                    if end > sent:
                        yield chunk({"content": text[sent:end]})
                        sent = end
                    if hit:
                        cancel.event.set()
                        break
            finally:
                cancel.event.set()  # also when the client went away mid-stream
                worker.join()
        new_ids = result.get("ids", [])
        final, reason = self._finish(new_ids, request)
        if len(final) > sent:
            yield chunk({"content": final[sent:]})
        yield chunk({}, reason)
        if include_usage:
            yield {**envelope, "choices": [], "usage": self._usage(request, new_ids)}


def _envelope(model: str, kind: str) -> dict:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": kind,
        "created": int(time.time()),
        "model": model,
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    engine: ChatEngine

    def _send_json(self, status: HTTPStatus, payload: dict) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send_json(HTTPStatus.OK, {"status": "ok"})
        elif self.path == "/v1/models":
            card = {
                "id": self.engine.name,
                "object": "model",
                "created": 0,
                "owned_by": "lfc",
            }
            self._send_json(HTTPStatus.OK, {"object": "list", "data": [card]})
        else:
            error = RequestError(HTTPStatus.NOT_FOUND, f"no such path {self.path}")
            self._send_json(error.status, error.body())

    def do_POST(self) -> None:
        try:
            if self.path != "/v1/chat/completions":
                raise RequestError(HTTPStatus.NOT_FOUND, f"no such path {self.path}")
            body = self._read_json()
            request = self.engine.prepare(body)
        except RequestError as error:
            self._send_json(error.status, error.body())
            return
        if not body.get("stream"):
            self._send_json(HTTPStatus.OK, self.engine.complete(request))
            return
        options = body.get("stream_options") or {}
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            for event in self.engine.stream(
                request, bool(options.get("include_usage"))
            ):
                self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client left; stream() has already stopped the generation

    def _read_json(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY_BYTES:
            raise RequestError(
                HTTPStatus.BAD_REQUEST, "a JSON body (at most 16 MiB) is required"
            )
        try:
            body = json.loads(self.rfile.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RequestError(
                HTTPStatus.BAD_REQUEST, f"the body is not JSON: {exc}"
            ) from None
        if not isinstance(body, dict):
            raise RequestError(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
        return body


def main() -> None:
    args = parse_args()
    model, tokenizer, origin = load_for_inference(args)
    serve = args.serve
    Handler.engine = ChatEngine(
        model, tokenizer, serve.served_model_name, serve.serve_max_model_len
    )
    try:
        server = ThreadingHTTPServer((serve.serve_host, serve.serve_port), Handler)
    except OSError as exc:
        raise SystemExit(
            f"cannot listen on {serve.serve_host}:{serve.serve_port} ({exc.strerror}): "
            "pass --serve_port PORT"
        ) from None
    url = f"http://{serve.serve_host}:{server.server_port}/v1"
    print(f"[serve] {origin} as {serve.served_model_name!r} on {url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("[serve] stopped")
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
