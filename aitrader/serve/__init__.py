"""The out-of-process prediction service: ``aitrader serve`` over ZeroMQ and its client.

``protocol`` (the versioned wire format), ``models`` (verified load and reload), ``server`` (the
ROUTER loop and its operations), ``feedback`` (durable outcome batches), ``jobs`` (train jobs as
separate ``retrain`` processes), ``security`` (loopback rule, CURVE keys), ``client`` (DEALER
client, circuit breaker, remote predictor, feedback sender), ``hook`` (paper-trade's
``--model-endpoint``). Importing this package loads neither zmq nor numpy; the modules do.
"""
