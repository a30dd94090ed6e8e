from sinkfleet.worker.batching import Batch, BatchPolicy


def test_empty_batch_never_flushes() -> None:
    assert not BatchPolicy().should_flush(0, 0, 999.0)


def test_flush_on_each_limit() -> None:
    p = BatchPolicy(max_records=100, max_bytes=1000, max_age_ms=50)
    assert not p.should_flush(99, 999, 0.049)
    assert p.should_flush(100, 0, 0.0)
    assert p.should_flush(1, 1000, 0.0)
    assert p.should_flush(1, 1, 0.050)


def test_wait_never_overruns_the_age_limit() -> None:
    p = BatchPolicy(max_age_ms=200)
    assert p.wait_ms(0, 0.0) == 200
    assert p.wait_ms(5, 0.150) == 50
    assert p.wait_ms(5, 0.5) == 0


def test_batch_is_truthy_only_with_offsets() -> None:
    b = Batch()
    assert not b
    b.dead.append(object())  # type: ignore[arg-type]
    assert not b
    from aiokafka import TopicPartition

    b.offsets[TopicPartition("t", 0)] = 5
    assert b
