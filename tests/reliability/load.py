"""Load: eight clients on the four servers and the Door at once, while the camera streams.

Each client repeats one ordinary operation (read frames, register, grab, detect twice over,
map, read panels, run a macro) until the phase has lasted ``seconds`` *and* a subscriber has
received ``frames`` Image change events *and* ``registrations`` Register calls have
succeeded (or ``cap_s`` passes; the report then says how far it got). Every call is valid, so
every error counts. The servers' resident memory is sampled by PID throughout: flat means
the largest value after the warm-up (the first tenth of the frames and registrations) is
within ``rss_limit_mb`` of the value at the end of the warm-up.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tango

from clients.door import DoorClient
from clients.launcher import Stack
from tests.reliability.corpus import Corpus
from tests.reliability.stackclients import DOOR, SERVER_OF, RssSampler, load_slots, proxy, reason_of

CAM, REG, PART, MAP = (SERVER_OF[s] for s in ("CameraDS/smart", "RegistrationDS/smart", "ParticleDS/smart",
                                              "CoordMapperDS/smart"))


BUSY_REFUSAL = "the device is busy"
"""Start of the documented refusal of a call whose turn did not come within 2.5 s (docs/interface.md,
"Several clients at once"): an answer, not an error."""


@dataclass
class OpStats:
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    refusals: int = 0
    examples: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.asarray([np.nan])
        return {"calls": len(self.latencies_ms) + sum(self.errors.values()) + self.refusals,
                "ok": len(self.latencies_ms), "documented_refusals": self.refusals,
                "errors": dict(self.errors), "error_examples": self.examples,
                **{f"p{q}_ms": round(float(np.percentile(lat, q)), 1) for q in (50, 95, 99)},
                "max_ms": round(float(np.max(lat)), 1)}


def _clients(stack: Stack, corpus: Corpus, door: DoorClient | None) -> dict[str, Callable[[], Any]]:
    """Eight clients: name -> one call. Each has its own proxies (as separate programs would)."""
    cam, cam2, reg, reg2 = proxy(stack, CAM, 5000), proxy(stack, CAM, 5000), proxy(stack, REG, 10000), \
        proxy(stack, REG, 10000)
    part, part2, mapper, panel_map = proxy(stack, PART, 10000), proxy(stack, PART, 10000), proxy(stack, MAP), \
        proxy(stack, MAP)
    detect = json.dumps({"path": str(corpus.valid)})
    register = json.dumps({"reference": "rel_ref", "target": "rel_tgt", "model": "translation"})
    grab = json.dumps({"slot": "rel_grab", "device": f"tango://{stack.tango_host}/{CAM}"})
    mapping = json.dumps({"from": "reliability", "to": "stage", "points": [[1.0, 2.0], [300.0, 40.0]]})

    def panel() -> None:
        cam2.read_attributes(["State", "Status", "FrameRate", "FrameNumber"])
        panel_map.read_attribute("Transforms")
        reg2.read_attribute("Slots")

    clients: dict[str, Callable[[], Any]] = {
        "camera: read Image + FrameMetadata": lambda: cam.read_attributes(["Image", "FrameMetadata"]),
        "registration: Register (translation)": lambda: reg.command_inout("Register", register),
        "registration: GrabImage from the camera": lambda: reg2.command_inout("GrabImage", grab),
        "particles: Detect (client 1)": lambda: part.command_inout("Detect", detect),
        "particles: Detect (client 2)": lambda: part2.command_inout("Detect", detect),
        "coordmapper: Map": lambda: mapper.command_inout("Map", mapping),
        "panel: camera State/Status/FrameRate, Transforms, Slots": panel,
    }
    if door is not None:
        clients["door: macro wa"] = lambda: door.run("wa", timeout_s=60)
    return clients


def run_load(stack: Stack, corpus: Corpus, seconds: float, frames: int, registrations: int, cap_s: float,
             rss_limit_mb: float = 50.0, log: Callable[[str], None] = print) -> dict[str, Any]:
    load_slots(stack, corpus)
    cam = proxy(stack, CAM, 5000)
    cam.write_attribute("TargetFrameRate", 0.0)
    received = [0]
    event_errors: Counter[str] = Counter()

    def on_image(event: tango.EventData) -> None:
        if event.err:
            event_errors[event.errors[0].reason if event.errors else "error"] += 1
        else:
            received[0] += 1

    # the first Detect of a fresh ParticleDS compiles trackpy (docs/interface.md): give it time, as advised
    proxy(stack, PART, 120_000).command_inout("Detect", json.dumps({"path": str(corpus.valid)}))
    door = DoorClient(f"tango://{stack.tango_host}/{DOOR}")
    clients = _clients(stack, corpus, door)
    stats = {name: OpStats() for name in clients}
    stop = threading.Event()

    def worker(name: str, call: Callable[[], Any]) -> None:
        while not stop.is_set():
            start = time.perf_counter()
            try:
                call()
                stats[name].latencies_ms.append((time.perf_counter() - start) * 1e3)
            except Exception as exc:  # noqa: BLE001 - every failure of a valid call is counted
                reason = reason_of(exc)
                if reason == "SMART_NotReady" and exc.args[0].desc.startswith(BUSY_REFUSAL):
                    stats[name].refusals += 1
                    stats[name].examples.setdefault("documented refusal", exc.args[0].desc.strip()[:300])
                    time.sleep(0.05)
                    continue
                stats[name].errors[reason] += 1
                stats[name].examples.setdefault(reason, str(getattr(exc, "args", [exc])[0])[:300]
                                                if not isinstance(exc, tango.DevFailed)
                                                else exc.args[0].desc.strip()[:300])
                time.sleep(0.05)

    servers = list(SERVER_OF)
    sub = cam.subscribe_event("Image", tango.EventType.CHANGE_EVENT, on_image)
    cam.command_inout("Start")
    deadline = time.monotonic() + 30
    while received[0] == 0 and time.monotonic() < deadline:  # clients start once there is a frame
        time.sleep(0.1)
    warm: dict[str, float] = {}
    t0 = time.monotonic()
    reg_name = "registration: Register (translation)"
    with RssSampler(stack, servers + ["Pool/smart", "MacroServer/smart", "PyDatabaseds"]) as rss:
        threads = [threading.Thread(target=worker, args=item, daemon=True) for item in clients.items()]
        for thread in threads:
            thread.start()
        last_log = 0.0
        while True:
            elapsed = time.monotonic() - t0
            regs = len(stats[reg_name].latencies_ms)
            if not warm and received[0] >= frames / 10 and regs >= registrations / 10:
                rss.sample()
                warm = {s: rss.samples[s][-1][1] for s in servers if rss.samples[s]}
                warm["t_s"] = elapsed
            if elapsed >= seconds and received[0] >= frames and regs >= registrations:
                break
            if elapsed >= cap_s:
                log(f"  load: stopping at the cap of {cap_s:.0f} s")
                break
            if elapsed - last_log >= 30:
                last_log = elapsed
                log(f"  load: {elapsed:.0f} s, {received[0]} frames received, {regs} registrations, "
                    f"errors {sum(sum(s.errors.values()) for s in stats.values())}")
            time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    duration = time.monotonic() - t0
    with contextlib.suppress(tango.DevFailed):
        cam.unsubscribe_event(sub)
    door.close()
    memory = {}
    for server in rss.samples:
        values = [v for t, v in rss.samples[server]]
        if not values:
            continue
        after = [v for t, v in rss.samples[server] if t >= warm.get("t_s", 0.0)]
        base = warm.get(server)
        growth = (max(after) - base) if base is not None and after else None
        memory[server] = {"start_mb": round(values[0], 1), "after_warmup_mb": None if base is None else round(base, 1),
                          "max_after_warmup_mb": round(max(after), 1) if after else None,
                          "end_mb": round(values[-1], 1),
                          "growth_mb": None if growth is None else round(growth, 1),
                          "flat": None if server not in servers else (growth is not None and growth <= rss_limit_mb)}
    return {
        "clients": len(clients), "duration_s": round(duration, 1), "target_s": seconds,
        "frames_received": received[0], "frames_target": frames, "event_errors": dict(event_errors),
        "registrations": len(stats[reg_name].latencies_ms), "registrations_target": registrations,
        "warmup_end_s": round(warm.get("t_s", float("nan")), 1), "rss_limit_mb": rss_limit_mb,
        "operations": {name: s.summary() for name, s in stats.items()}, "memory": memory,
    }
