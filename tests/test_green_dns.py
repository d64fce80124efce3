"""Name resolution in the gevent worker (kimi/green_dns.py, chosen by gunicorn.conf.py): an IP
address needs no trip to gevent's thread pool, a name is looked up once for all the connections
that wait for it and then kept, and a failed lookup is not kept. Run in a monkey-patched child
process set up by the shipped gunicorn.conf.py, as a gevent worker is."""

from __future__ import annotations

import os
import textwrap

from helpers import child_output

SCRIPT = textwrap.dedent(
    """
    import runpy, socket as stdlib_socket
    from types import SimpleNamespace
    answers = {
        "kimi.example": stdlib_socket.getaddrinfo("127.0.0.1", 443, 0, stdlib_socket.SOCK_STREAM)
    }
    runpy.run_path("gunicorn.conf.py")  # sets GEVENT_RESOLVER for the gevent worker

    from gevent import monkey

    monkey.patch_all()

    import socket

    import gevent

    resolver = gevent.get_hub().resolver
    print("resolver", type(resolver).__module__, type(resolver).__name__)
    looked_up = []

    def lookup_on_a_thread(function, args, kwargs=None):
        looked_up.append(args[0])
        gevent.sleep(0.05)  # a lookup takes a while: others ask meanwhile
        if args[0] in answers:
            return answers[args[0]]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    resolver.pool = SimpleNamespace(apply=lookup_on_a_thread)  # the lookups, counted

    print("address", socket.getaddrinfo("127.0.0.1", 443, 0, socket.SOCK_STREAM)[0][4])
    print("v6 address", socket.getaddrinfo("::1", 443, 0, socket.SOCK_STREAM)[0][4][:2])
    jobs = [gevent.spawn(socket.getaddrinfo, "kimi.example", 443, 0, socket.SOCK_STREAM)
            for _ in range(20)]
    gevent.joinall(jobs, timeout=5)
    print("burst", sum(job.value == answers["kimi.example"] for job in jobs))
    print("again", socket.getaddrinfo("kimi.example", 443, 0, socket.SOCK_STREAM)[0][4])
    for _ in range(2):
        try:
            socket.getaddrinfo("gone.example", 443)
        except socket.gaierror as exc:
            print("failed", exc.errno == socket.EAI_NONAME)
    print("looked up", looked_up)
    """
)


def test_the_gevent_worker_resolves_addresses_at_once_and_names_once():
    env = {k: v for k, v in os.environ.items() if k not in ("GEVENT_RESOLVER", "GUNICORN_WORKER")}
    assert child_output(SCRIPT, env) == [
        "resolver kimi.green_dns Resolver",
        "address ('127.0.0.1', 443)",
        "v6 address ('::1', 443)",
        "burst 20",  # twenty connections at once: one lookup on a thread
        "again ('127.0.0.1', 443)",  # kept: no second lookup
        "failed True",
        "failed True",  # a failure is not kept: looked up again
        "looked up ['kimi.example', 'gone.example', 'gone.example']",
    ]
