"""The comparison point for the burn-down benchmark: pgqueuer (PyPI, asyncpg), tuned as its
authors suggest for throughput (2 consumers, batch size 500), draining N no-op jobs on the same
server. Run by bench/compare_pgqueuer.sh in a virtualenv; never imported by pgcanvas."""

import asyncio
import sys
import time

import asyncpg
from pgqueuer.db import AsyncpgDriver
from pgqueuer.qm import QueueManager
from pgqueuer.queries import Queries
from pgqueuer import types


async def main(dsn: str, n: int) -> None:
    conn = await asyncpg.connect(dsn)
    queries = Queries(AsyncpgDriver(conn))
    try:
        await queries.uninstall()
    except Exception:
        pass
    await queries.install()

    started = time.perf_counter()
    for i in range(0, n, 1000):
        k = min(1000, n - i)
        await queries.enqueue(["noop"] * k, [None] * k, [0] * k)
    enqueue_s = time.perf_counter() - started

    async def consume() -> None:
        c = await asyncpg.connect(dsn)
        qm = QueueManager(Queries(AsyncpgDriver(c)))

        @qm.entrypoint("noop")
        async def noop(job) -> None:
            return None

        await qm.run(batch_size=500, mode=types.QueueExecutionMode.drain)
        await c.close()

    started = time.perf_counter()
    await asyncio.gather(consume(), consume())
    drain_s = time.perf_counter() - started
    left = await conn.fetchval("SELECT count(*) FROM pgqueuer")
    print(f"pgqueuer 1.6: batch enqueue {n / enqueue_s:,.0f} jobs/s; burn-down {n / drain_s:,.0f} jobs/s "
          f"(2 consumers, batch 500; {left} left)")
    await queries.uninstall()
    await conn.close()


asyncio.run(main(sys.argv[1], int(sys.argv[2])))
