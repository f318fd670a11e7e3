"""Independent test peers shared by every engineer's integration tests.

Nothing here imports ``gateway.sip`` or ``gateway.sdp``: the peers parse and build SIP and SDP
with their own small code, so a bug in the gateway's parsers cannot hide on both ends of a test.

- ``sip_ua.SipTestUA``: scripted SIP user agent over UDP, TCP or TLS (UAC and UAS).
- ``rtp.RtpEndpoint``: plain RTP or SRTP (SDES keys of its own) sender/receiver.
- ``sdes``: a=crypto lines and minimal SDP offers/answers written independently of gateway.sdp.
- ``net.free_port``, ``certs.make_test_pki``, ``tone`` (PCMU tone frames, WAV, Goertzel).
- ``sdp_samples``: realistic SDP bodies in the styles of common phones and PBXs.
"""
