"""deploy/coturn/turnserver.conf as shipped, run by Debian's coturn on loopback: a TURN client
(aioice, as a voice instance's aiortc uses it) allocates a relay with a user's credentials,
media goes through it both ways, a wrong password is refused, and the shipped deny list keeps
the relay from private addresses."""

import asyncio
import shutil
import signal

import pytest
from aioice.stun import TransactionFailed
from aioice.turn import create_turn_endpoint

from tests.deploy_stack import ROOT, Process, free_port, until

pytestmark = pytest.mark.deploy

TURN_CONF = ROOT / "deploy" / "coturn" / "turnserver.conf"
USER, PASSWORD = "voice", "a-test-password"


def settings():
    """The shipped file as coturn reads it: ``key=value`` and bare flags, one a line."""
    lines = [line.strip() for line in TURN_CONF.read_text().splitlines()]
    pairs = [line.partition("=") for line in lines if line and not line.startswith("#")]
    return [(key, value) for key, _, value in pairs]


def test_the_shipped_file_requires_users_and_carries_no_credentials():
    found = settings()
    keys = {key for key, _ in found}
    values = dict(found)
    assert {"lt-cred-mech", "fingerprint", "realm", "no-cli", "no-multicast-peers"} <= keys
    assert "no-auth" not in keys and "use-auth-secret" not in keys
    assert "user" not in keys and "static-auth-secret" not in keys  # secrets stay out
    assert int(values["listening-port"]) == 3478
    assert 1024 < int(values["min-port"]) < int(values["max-port"]) <= 65535
    denied = {value for key, value in found if key == "denied-peer-ip"}
    for private in ("10.0.0.0-10.255.255.255", "172.16.0.0-172.31.255.255",
                    "192.168.0.0-192.168.255.255", "127.0.0.0-127.255.255.255",
                    "169.254.0.0-169.254.255.255"):  # fmt: skip
        assert private in denied


class Collect(asyncio.DatagramProtocol):
    def __init__(self):
        self.received = asyncio.Queue(maxsize=16)

    def datagram_received(self, data, addr):
        self.received.put_nowait((data, addr))


async def test_a_relay_through_the_shipped_config_on_loopback(tmp_path):
    binary = shutil.which("turnserver")
    assert binary, "coturn is not installed: run `sudo scripts/install-deploy-tools`"
    port = free_port()  # a free TCP port; coturn listens on it over UDP and TCP
    # Loopback stands in for the public address: these overrides make 127.0.0.1 (and only
    # it) usable, as listener, relay and peer; everything else is the shipped file.
    process = Process(
        [binary, "-c", str(TURN_CONF), "--listening-ip", "127.0.0.1",
         "--relay-ip", "127.0.0.1", "--listening-port", str(port),
         "--user", f"{USER}:{PASSWORD}", "--realm", "test.invalid",
         "--allow-loopback-peers", "--allowed-peer-ip", "127.0.0.1",
         "--pidfile", str(tmp_path / "turnserver.pid"), "--userdb", str(tmp_path / "turndb")]
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    try:

        async def relaying():
            assert process.running(), process.log()
            return "Relay ports initialization done" in process.log()

        await until(relaying, "coturn to start")

        async def allocate(password):
            return await asyncio.wait_for(
                create_turn_endpoint(Collect, ("127.0.0.1", port), USER, password), 10
            )

        with pytest.raises(TransactionFailed) as refused:
            await allocate("wrong")
        assert refused.value.response.attributes["ERROR-CODE"][0] == 401

        turn, client = await allocate(PASSWORD)
        peer_transport, peer = await loop.create_datagram_endpoint(
            Collect, local_addr=("127.0.0.1", 0)
        )
        try:
            relayed = turn.get_extra_info("sockname")
            values = dict(settings())
            assert int(values["min-port"]) <= relayed[1] <= int(values["max-port"])
            # The instance's side sends out through its relay; the browser's side answers to
            # the relay's address, and it reaches the instance.
            turn.sendto(b"from the instance", peer_transport.get_extra_info("sockname"))
            data, source = await asyncio.wait_for(peer.received.get(), 5)
            assert (data, source) == (b"from the instance", relayed)
            peer_transport.sendto(b"from the browser", relayed)
            data, _ = await asyncio.wait_for(client.received.get(), 5)
            assert data == b"from the browser"

            # A private address stays out of reach: the shipped deny list covers 127.0.0.2
            # (only 127.0.0.1 was re-opened for this test).
            turn.sendto(b"to a private address", ("127.0.0.2", 9))

            async def denied():
                return "peer IP 127.0.0.2 denied" in process.log()

            await until(denied, "coturn to deny a private peer")
        finally:
            peer_transport.close()
            turn.close()
    finally:
        await process.stop(signal.SIGTERM)
