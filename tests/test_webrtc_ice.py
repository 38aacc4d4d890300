"""ICE: no STUN server unless configured, and host candidates where the settings say."""

import pytest
from aiortc import RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack

from voice.config import Settings, WebRtcSettings
from voice.errors import ConfigError
from voice.transports.ice import (
    AIOICE_DEFAULT,
    HostAddresses,
    gathering_on,
    host_addresses,
    rtc_configuration,
)


def candidate_hosts(sdp: str) -> set[str]:
    return {line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")}


async def offer_on(addresses: HostAddresses | None) -> str:
    pc = RTCPeerConnection(rtc_configuration(()))
    pc.addTransceiver(AudioStreamTrack(), direction="sendrecv")
    try:
        if addresses is None:
            await pc.setLocalDescription(await pc.createOffer())
        else:
            with gathering_on(addresses):
                await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


def test_no_ice_servers_unless_configured():
    # aiortc's own default (iceServers=None) is Google's public STUN server.
    assert rtc_configuration(()).iceServers == []
    settings = Settings.from_env(
        {
            "VOICE_WEBRTC_ICE_SERVERS": '[{"urls": ["turn:turn.example:3478?transport=tcp"],'
            ' "username": "u", "credential": "secret-pass"}, "stun:stun.example:3478"]'
        }
    )
    servers = settings.webrtc.ice_servers
    assert "secret-pass" not in repr(settings)
    (turn, stun) = rtc_configuration(servers).iceServers
    assert turn.urls == ["turn:turn.example:3478?transport=tcp"]
    assert (turn.username, turn.credential) == ("u", "secret-pass")
    assert stun.urls == ["stun:stun.example:3478"] and stun.credential is None


def test_ice_servers_from_a_comma_separated_list_and_bad_ones_refused():
    env = {"VOICE_WEBRTC_ICE_SERVERS": "stun:a.example:3478, turn:b.example"}
    urls = [s.urls for s in Settings.from_env(env).webrtc.ice_servers]
    assert urls == [("stun:a.example:3478",), ("turn:b.example",)]
    for bad in ("https://stun.example", "[{", '{"urls": "stun:x"}', "stun:user@host"):
        with pytest.raises(ConfigError):
            Settings.from_env({"VOICE_WEBRTC_ICE_SERVERS": bad})


def test_host_addresses_follow_the_setting_else_the_bind_address():
    env = {"VOICE_WEBRTC_HOST_ADDRESSES": "127.0.0.1, ::1"}
    assert Settings.from_env(env).webrtc.host_addresses == ("127.0.0.1", "::1")
    for bad in ("eth0", "0.0.0.0", "224.0.0.251"):
        with pytest.raises(ConfigError):
            Settings.from_env({"VOICE_WEBRTC_HOST_ADDRESSES": bad})
    fixed = WebRtcSettings(host_addresses=("10.1.2.3",))
    assert host_addresses(fixed, "127.0.0.1") == HostAddresses(only=("10.1.2.3",))
    default = WebRtcSettings()
    assert host_addresses(default, "127.0.0.1") == HostAddresses(extra=("127.0.0.1",))
    assert host_addresses(default, "localhost") == HostAddresses(extra=("127.0.0.1",))
    assert host_addresses(default, "::1") == HostAddresses(extra=("::1",))
    assert host_addresses(default, "0.0.0.0") == AIOICE_DEFAULT
    assert host_addresses(default, "voice.internal") == AIOICE_DEFAULT


async def test_gathering_offers_loopback_only_when_asked():
    # aioice alone leaves 127.0.0.1 out; this is what breaks if an upgrade moves its hook.
    assert "127.0.0.1" not in candidate_hosts(await offer_on(None))
    assert candidate_hosts(await offer_on(HostAddresses(only=("127.0.0.1",)))) == {"127.0.0.1"}
    both = candidate_hosts(await offer_on(HostAddresses(extra=("127.0.0.1",))))
    assert "127.0.0.1" in both
    assert both - {"127.0.0.1"} == candidate_hosts(await offer_on(AIOICE_DEFAULT))
    # Outside the block, aioice's own choice again.
    assert "127.0.0.1" not in candidate_hosts(await offer_on(None))
