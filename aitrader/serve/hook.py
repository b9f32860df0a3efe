"""paper-trade through a prediction service: ``--model-endpoint`` and ``endpoint:`` per model.

The run still resolves each model in the registry (verified, as always): its manifest gives the
feature contract the run's streaming features follow, the confidence calibration of the strategy
and the horizon of the outcomes. Only the prediction moves: the slot's predictor becomes a
:class:`aitrader.serve.client.RemotePredictor`, which sends the bar's feature row to the service and
refuses a reply from any other version than the one the run loaded (its digest). The service is
asked first (``info``): a service that does not serve that version is an error before the run
starts, not a stream of fallbacks.
"""

from __future__ import annotations

from typing import Any

from aitrader.errors import TradingError


def with_endpoint(cfg: Any, endpoint: str) -> Any:
    """``cfg`` with ``endpoint`` set on every model entry (``paper-trade --model-endpoint``)."""
    ml = cfg.ml_trading
    entries = [m.model_copy(update={"endpoint": endpoint}) for m in ml.models]
    return cfg.model_copy(update={"ml_trading": ml.model_copy(update={"models": entries})})


def remote_models(cfg: Any, specs: list[Any], opts: Any, run_id: str, endpoint: str | None) -> Any:
    """``cfg`` with ``endpoint`` on every model when given; remote predictors for the models that have one."""
    if endpoint is not None:
        cfg = with_endpoint(cfg, endpoint)
    if any(m.endpoint for m in cfg.ml_trading.models if m.enabled):
        attach_remote(cfg, specs, opts, run_id)
    return cfg


def remote_predictor(client: Any, name: str, digest: str, n_features: int, svc: Any) -> Any:
    """The remote predictor of one model version, with the ``ml_trading.service`` settings."""
    from aitrader.serve.client import CircuitBreaker, RemotePredictor

    return RemotePredictor(client, name, digest, n_features,
                           breaker=CircuitBreaker(svc.breaker_failures, svc.breaker_reset_bars),
                           cooldown=svc.prediction_cooldown, confidence_threshold=svc.prediction_confidence_threshold,
                           timeout_ms=svc.timeout_ms)


def _check_served(client: Any, endpoint: str, name: str, spec: Any, timeout_ms: float) -> None:
    """TradingError unless the service at ``endpoint`` answers and serves ``spec``'s very version."""
    from aitrader.serve.client import ServiceError

    try:
        info = client.call("info", timeout_ms=max(timeout_ms, 5000.0))
    except ServiceError as exc:
        raise TradingError(f"the prediction service {endpoint} for {spec.model_id} does not answer ({exc}); "
                           f"start it (aitrader serve --model {name} --bind {endpoint}) or drop --model-endpoint") \
            from exc
    served = (info.get("models") or {}).get(name)
    if not served or served.get("digest") != spec.digest:
        have = f"{served.get('model_id')} ({str(served.get('digest'))[:12]})" if served else "not this model"
        raise TradingError(f"{endpoint} serves {have}, the run trades {spec.model_id} ({spec.digest[:12]}); serve "
                           "the same version, or reload the service")


def attach_remote(cfg: Any, specs: list[Any], opts: Any, run_id: str) -> list[Any]:
    """Give each spec whose config entry has an ``endpoint`` a remote predictor; returns the clients.

    Adds the feedback sender to the run's bus (``opts.subscribers``), a final flush and close to
    ``opts.on_finish``, and for a ``--follow`` run that swaps versions, remote predictors for the new
    versions too (:class:`RemoteSwapSource`)."""
    from aitrader.serve.client import FeedbackSender, ServiceClient

    svc = cfg.ml_trading.service
    entries = [m for m in cfg.ml_trading.models if m.enabled]
    clients: dict[str, ServiceClient] = {}
    remote: dict[str, dict[str, str]] = {}
    try:
        for entry, spec in zip(entries, specs, strict=True):
            if not entry.endpoint:
                continue
            client = clients.get(entry.endpoint)
            if client is None:
                client = clients[entry.endpoint] = ServiceClient(entry.endpoint, timeout_ms=svc.timeout_ms)
            name = (spec.name or spec.model_id).partition("@")[0].partition(":")[0]
            _check_served(client, entry.endpoint, name, spec, svc.timeout_ms)
            spec.predictor = remote_predictor(client, name, spec.digest, len(spec.manifest["features"]["names"]), svc)
            remote.setdefault(entry.endpoint, {})[spec.model_id] = name
    except BaseException:
        _close(clients)
        raise
    if opts.swap is not None and remote:  # a --follow run: a newly deployed version is served remotely too
        opts.swap.source = RemoteSwapSource(opts.swap.source, clients, remote, svc)
    senders = [FeedbackSender(clients[endpoint], run_id, models, batch_size=svc.feedback_batch_size,
                              send_interval=svc.feedback_send_interval, max_buffer=svc.max_feedback_buffer,
                              timeout_ms=max(svc.timeout_ms, 1000.0))
               for endpoint, models in remote.items()] if svc.feedback else []
    opts.subscribers.extend(sender.attach for sender in senders)
    if clients:
        previous = opts.on_finish

        def finish() -> None:
            try:
                for sender in senders:
                    sender.flush()
            finally:
                _close(clients)
                if previous is not None:
                    previous()

        opts.on_finish = finish
    return list(clients.values())


class RemoteSwapSource:
    """A live swap's model source for remote models: the new version is checked and loaded as for an
    in-process run (its manifest and features), but predicts through the service, which must serve
    that version (its ``reload``) before the replies are accepted; until then the digest check makes
    each call a failure with the configured fallback."""

    def __init__(self, inner: Any, clients: dict[str, Any], remote: dict[str, dict[str, str]], svc: Any) -> None:
        self.inner = inner
        self.svc = svc
        # served name -> client of its endpoint
        self.by_name = {name: clients[ep] for ep, models in remote.items() for name in models.values()}

    def changed(self) -> bool:
        return bool(self.inner.changed())

    def target(self, name: str, alias: str) -> Any:
        return self.inner.target(name, alias)

    def prepare(self, offer: Any, buffer_size: int) -> Any:
        prepared = self.inner.prepare(offer, buffer_size)
        name = offer.model_id.rpartition(":v")[0]
        client = self.by_name.get(name)
        if client is not None:  # else an in-process model of the same run
            prepared.predictor = remote_predictor(client, name, prepared.digest,
                                                  len(prepared.manifest["features"]["names"]), self.svc)
        return prepared


def _close(clients: dict[str, Any]) -> None:
    for c in clients.values():
        c.close()
