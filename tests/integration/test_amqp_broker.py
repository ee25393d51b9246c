"""RabbitMQ as Celery's broker (ARBITER_BROKER_URL=amqp://...): the configuration, and the signal
client's message on a real RabbitMQ in a virtual host of this test's own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from amqp.exceptions import PreconditionFailed
from kombu import Connection, Queue

from core.settings import Settings
from strategy_client.broker import broker_url
from strategy_client.client import SignalClient
from strategy_client.routing import INTAKE
from tasks.app import celery_config
from tests.fixtures.rabbitmq import RabbitVhost, amqp_reachable


def test_without_a_broker_url_redis_is_the_broker_with_its_visibility_timeout() -> None:
    settings = Settings(redis_url="redis://127.0.0.1:6379/3", visibility_timeout_s=900)
    config = celery_config(settings)
    assert config["broker_url"] == "redis://127.0.0.1:6379/3"
    transport = config["broker_transport_options"]
    assert isinstance(transport, dict)
    assert transport["visibility_timeout"] == 900
    # A dead worker's messages are looked for every 10 s, not kombu's every 100 s.
    assert (transport["unacked_restore_interval"], transport["unacked_restore_throttle"]) == (10, 1)


def test_an_amqp_broker_gets_quorum_queues_confirms_and_no_visibility_timeout() -> None:
    settings = Settings(redis_url="redis://127.0.0.1:6379/3",
                        broker_url="amqp://guest:guest@127.0.0.1:5672//")
    assert broker_url(settings) == "amqp://guest:guest@127.0.0.1:5672//"
    config = celery_config(settings)
    assert config["broker_transport_options"] == {"confirm_publish": True}
    assert config["task_acks_late"] is True and config["task_reject_on_worker_lost"] is True
    queues = config["task_queues"]
    assert isinstance(queues, list)
    assert {q.name for q in queues} == {"signals", "orders", "maintenance", "notifications"}
    for queue in queues:
        assert queue.durable and queue.queue_arguments == {"x-queue-type": "quorum"}
        assert queue.exchange.type == "topic" and queue.routing_key == queue.name


@pytest.fixture
def vhost_url() -> Iterator[str]:
    if not amqp_reachable():
        pytest.skip("no RabbitMQ on 127.0.0.1:5672")
    vhost = RabbitVhost().create()
    try:
        yield vhost.url
    finally:
        vhost.delete()


def test_the_client_sends_to_a_durable_quorum_queue_on_rabbitmq(
    vhost_url: str, redis_url: str
) -> None:
    client = SignalClient(redis_url, vhost_url, keys={"long_term": "an-amqp-test-key"})
    try:
        coid = client.submit_signal("long_term", "AAPL", "buy", 5, signal_id="amqp-1")
    finally:
        client.close()
    with Connection(vhost_url, connect_timeout=10) as conn:
        message = conn.SimpleQueue(Queue(
            "signals", queue_arguments={"x-queue-type": "quorum"}, no_declare=True)).get(
                timeout=10)
        assert message.headers["task"] == INTAKE
        assert message.payload[0][0]["signal_id"] == "amqp-1"
        assert coid.startswith("arb-")
        message.ack()
        # The queue is a quorum queue: declaring it classic is refused.
        with pytest.raises(PreconditionFailed):
            conn.default_channel.queue_declare("signals", durable=True)
