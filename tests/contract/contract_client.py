#!/usr/bin/env python3
"""A Device Trust CA protocol v1 client written from the contract alone.

It knows nothing of the reference server's code: it reads the contract
(`docs/protocol.md`), speaks JSON over HTTPS with the standard library (`ssl`,
`http.client`, `json`) and makes keys and CSRs with the `openssl` command line. It checks
that every endpoint gives exactly the documented answers: status codes, error codes and
messages, bodies, the certificate profile, the CRL.

Input: one JSON line on stdin, as printed by `devicetrust-ca dev`:
  {"url", "certAuthDomain", "enrollmentToken", "adminToken", "caBundle",
   "issuerCertificate", "dataDir"}
and `--managed-devices FILE`, the static device list the CA was started with (the first
entries are used as managed devices; a device not in it is unmanaged).

Secrets (the tokens) arrive on stdin and only ever leave in HTTP headers; they are never
put on a command line. Exit status 0 when every check passed, 1 otherwise.
"""

import argparse
import base64
import http.client
import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
import urllib.parse

LIMIT_MESSAGE = "Maximum enrollment limit of 5 certificates for a device is reached"
EVENT_MESSAGES = {
    "user.credential.enroll": "Device Trust certificate enrollment",
    "pki.cert.issue": "Device Trust certificate issuance",
    "pki.cert.renew": "Device Trust certificate renewal",
    "pki.cert.revoke": "Device Trust certificate revocation",
    "user.authentication.authenticate": "Authentication of device via certificate",
}


class Contract:
    def __init__(self, info, devices, workdir):
        self.info = info
        self.devices = devices
        self.workdir = workdir
        self.failures = []
        self.checks = 0
        url = urllib.parse.urlsplit(info["url"])
        self.host, self.port = url.hostname, url.port
        domain = urllib.parse.urlsplit(info["certAuthDomain"])
        self.domain_host, self.domain_port = domain.hostname, domain.port
        self.counter = 0

    # ----- plumbing -----

    def check(self, condition, what):
        self.checks += 1
        if not condition:
            self.failures.append(what)
            print(f"FAIL: {what}", file=sys.stderr)
        return condition

    def path(self, name):
        self.counter += 1
        return os.path.join(self.workdir, f"{self.counter:03d}-{name}")

    def openssl(self, *args, stdin=None):
        result = subprocess.run(["openssl", *args], input=stdin, capture_output=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.decode(errors='replace')}")
        return result.stdout

    def context(self, cert=None, key=None):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self.info["caBundle"])
        if cert:
            ctx.load_cert_chain(cert, key)
        return ctx

    def request(self, method, path, body=None, token=None, cert=None, key=None, headers=None, domain=False,
                raw=None, declared_length=None):
        host, port = (self.domain_host, self.domain_port) if domain else (self.host, self.port)
        conn = http.client.HTTPSConnection(host, port, context=self.context(cert, key), timeout=30)
        all_headers = {"Accept": "application/json"}
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            all_headers["Content-Type"] = "application/json; charset=utf-8"
        all_headers.update(headers or {})
        try:
            if declared_length is None:
                conn.request(method, path, body=data, headers=all_headers)
            else:
                # Headers only, announcing a body of `declared_length` bytes: the server must
                # refuse from Content-Length alone. Sending the body too would race its early
                # answer and close (the client's write then fails with EOF or a reset).
                conn.putrequest(method, path)
                for name, value in {**all_headers, "Content-Length": str(declared_length)}.items():
                    conn.putheader(name, value)
                conn.endheaders()
            response = conn.getresponse()
            payload = response.read()
            return response.status, dict((k.lower(), v) for k, v in response.getheaders()), payload
        finally:
            conn.close()

    def json_call(self, *args, **kwargs):
        status, headers, payload = self.request(*args, **kwargs)
        try:
            parsed = json.loads(payload) if payload else None
        except ValueError:
            parsed = None
        return status, headers, parsed

    def expect_error(self, what, result, status, code):
        got_status, headers, body = result
        ok = self.check(got_status == status, f"{what}: status {got_status}, want {status} ({body})")
        error = (body or {}).get("error") or {}
        self.check(error.get("code") == code, f"{what}: code {error.get('code')!r}, want {code!r}")
        self.check(isinstance(error.get("message"), str) and error.get("message"),
                   f"{what}: the error has a message")
        self.check(headers.get("content-type", "").startswith("application/json"),
                   f"{what}: error body is JSON")
        return ok and error

    # ----- keys and requests -----

    def key(self, kind="p256"):
        path = self.path(f"{kind}.key")
        options = {
            "p256": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            "p384": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
            "p521": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521"],
            "rsa1024": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
            "rsa2048": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            "ed25519": ["-algorithm", "ED25519"],
        }[kind]
        self.openssl("genpkey", *options, "-out", path)
        return path

    def csr(self, key):
        der = self.openssl("req", "-new", "-key", key, "-subj", "/CN=whatever/O=ignored", "-outform", "DER")
        return base64.b64encode(der).decode()

    def enroll_body(self, device, csr, user="alice"):
        return {
            "clientVersion": "1.0.0",
            "platform": "macos",
            "device": {"udid": device["udid"], "serialNumber": device["serialNumber"],
                       "displayName": "Contract test Mac", "osVersion": "14.5"},
            "user": user,
            "csr": csr,
        }

    def enroll(self, device, csr, user="alice"):
        return self.json_call("POST", "/api/v1/enroll", self.enroll_body(device, csr, user),
                              token=self.info["enrollmentToken"])

    def save(self, pem, name):
        path = self.path(name)
        with open(path, "w", encoding="ascii") as f:
            f.write(pem)
        return path

    def admin(self, method, path):
        return self.json_call(method, path, token=self.info["adminToken"])

    # ----- the checks -----

    def metadata(self):
        status, headers, body = self.json_call("GET", "/api/v1/metadata?platform=macos")
        self.check(status == 200, f"metadata: status {status}")
        self.check(headers.get("content-type") == "application/json; charset=utf-8",
                   f"metadata: content-type {headers.get('content-type')!r}")
        body = body or {}
        self.check(body.get("certAuthDomain") == self.info["certAuthDomain"], "metadata: certAuthDomain")
        self.check(body.get("issuerCommonName") == "MTLS Certificate Authority", "metadata: issuerCommonName")
        with open(self.info["issuerCertificate"], encoding="ascii") as f:
            issuer = f.read()
        self.check(body.get("caCertificates") == [issuer], "metadata: caCertificates is the issuer")
        self.check(body.get("certificateLifetimeDays") == 365, "metadata: certificateLifetimeDays")
        self.check(body.get("renewBeforeDays") == 30, "metadata: renewBeforeDays")
        self.check(body.get("maxUnboundCertificates") == 5, "metadata: maxUnboundCertificates")
        self.check(body.get("readOnly") is False, "metadata: readOnly")
        status, _, _ = self.json_call("GET", "/api/v1/metadata?platform=linux")
        self.check(status == 200, "metadata for linux")

    def check_issued(self, what, result, device, want_status=201):
        status, headers, body = result
        if not self.check(status == want_status, f"{what}: status {status}, want {want_status} ({body})"):
            return None
        self.check(headers.get("content-type") == "application/json; charset=utf-8", f"{what}: content-type")
        for field in ("certificate", "chain", "serialNumber", "notBefore", "notAfter", "state"):
            self.check(field in body, f"{what}: has {field}")
        self.check(re.fullmatch(r"[0-9a-f]+", body.get("serialNumber", "")) is not None,
                   f"{what}: serial is lowercase hex")
        self.check(body.get("notAfter", "").endswith("Z") and body.get("notBefore", "").endswith("Z"),
                   f"{what}: times are RFC 3339 UTC")
        leaf = self.save(body["certificate"], "leaf.pem")
        out = subprocess.run(["openssl", "verify", "-purpose", "sslclient", "-CAfile",
                              self.info["issuerCertificate"], leaf], capture_output=True, check=False)
        self.check(out.returncode == 0, f"{what}: openssl verify -purpose sslclient: {out.stdout + out.stderr}")
        text = self.openssl("x509", "-in", leaf, "-noout", "-text", "-serial").decode()
        self.check("TLS Web Client Authentication" in text, f"{what}: EKU clientAuth")
        self.check("CA:FALSE" in text, f"{what}: CA:FALSE")
        self.check("Digital Signature" in text, f"{what}: keyUsage digitalSignature")
        self.check(f"URI:urn:devicetrust:device:{device['udid']}" in text, f"{what}: SAN URI")
        self.check(re.search(r"Subject: CN\s*=\s*Device Trust\s*$", text, re.M) is not None,
                   f"{what}: subject CN Device Trust")
        self.check(re.search(r"Issuer: CN\s*=\s*MTLS Certificate Authority", text) is not None,
                   f"{what}: issuer CN")
        self.check(f"serial={body['serialNumber'].upper()}" in text, f"{what}: serial matches the certificate")
        with open(self.info["issuerCertificate"], encoding="ascii") as f:
            self.check(body.get("chain") == [f.read()], f"{what}: chain is the issuer")
        return body

    def run(self):
        managed = self.devices
        unmanaged = {"udid": "00000000-0000-0000-0000-00000000DEAD", "serialNumber": "NOTMANAGED1"}
        token = self.info["enrollmentToken"]

        self.metadata()

        # Enrollment, idempotency, key types.
        dev_a = managed[0]
        key_a = self.key("p256")
        csr_a = self.csr(key_a)
        first = self.check_issued("enroll p256", self.enroll(dev_a, csr_a), dev_a)
        if first is None:
            return
        self.check(first["state"] == "unbound", "enroll: state unbound")
        repeat = self.check_issued("idempotent repeat", self.enroll(dev_a, csr_a), dev_a, want_status=200)
        if repeat:
            self.check(repeat["serialNumber"] == first["serialNumber"], "repeat: same serial")
            self.check(repeat["certificate"] == first["certificate"], "repeat: same certificate")
        self.check_issued("enroll p384", self.enroll(managed[1], self.csr(self.key("p384"))), managed[1])
        self.check_issued("enroll rsa2048", self.enroll(managed[1], self.csr(self.key("rsa2048"))), managed[1])

        # Refusals of enroll.
        csr_ok = self.csr(self.key("p256"))
        self.expect_error("enroll without token", self.json_call(
            "POST", "/api/v1/enroll", self.enroll_body(managed[2], csr_ok)), 401, "invalid_token")
        self.expect_error("enroll with a wrong token", self.json_call(
            "POST", "/api/v1/enroll", self.enroll_body(managed[2], csr_ok), token="x" * 32), 401, "invalid_token")
        self.expect_error("enroll with broken JSON", self.json_call(
            "POST", "/api/v1/enroll", raw=b"{\"clientVersion\":", token=token), 400, "invalid_request")
        body = self.enroll_body(managed[2], csr_ok)
        del body["device"]
        self.expect_error("enroll without device", self.json_call(
            "POST", "/api/v1/enroll", body, token=token), 400, "invalid_request")
        for kind in ("rsa1024", "p521", "ed25519"):
            self.expect_error(f"enroll with a {kind} key", self.enroll(managed[2], self.csr(self.key(kind))),
                              400, "invalid_csr")
        der = bytearray(base64.b64decode(csr_ok))
        der[-4] ^= 0x01
        self.expect_error("enroll with a bad CSR signature",
                          self.enroll(managed[2], base64.b64encode(bytes(der)).decode()), 400, "invalid_csr")
        self.expect_error("enroll with a CSR that is not base64", self.enroll(managed[2], "@@@"), 400, "invalid_csr")
        self.expect_error("enroll with a 70 KiB body", self.json_call(
            "POST", "/api/v1/enroll", token=token, headers={"Content-Type": "application/json; charset=utf-8"},
            declared_length=70 * 1024), 413, "payload_too_large")
        self.expect_error("enroll an unmanaged device", self.enroll(unmanaged, csr_ok), 403, "device_not_managed")

        # The unbound limit.
        dev_l = managed[3]
        for i in range(5):
            self.check_issued(f"limit enrollment {i + 1}", self.enroll(dev_l, self.csr(self.key())), dev_l)
        error = self.expect_error("sixth unbound certificate", self.enroll(dev_l, self.csr(self.key())),
                                  409, "enrollment_limit_reached")
        if error:
            self.check(error.get("message") == LIMIT_MESSAGE, f"limit message: {error.get('message')!r}")

        # Mutual TLS: status, verify (binding), renew.
        cert_a = self.save(first["certificate"], "a.pem")
        status, _, body = self.json_call("GET", "/api/v1/certificate", cert=cert_a, key=key_a)
        self.check(status == 200, f"status: {status} {body}")
        if status == 200:
            self.check(body.get("serialNumber") == first["serialNumber"], "status: serial")
            self.check(body.get("state") == "unbound", "status: unbound before first use")
            self.check(body.get("boundUser") is None, "status: no bound user yet")
            self.check(body.get("device") == {"udid": dev_a["udid"]}, "status: device")
            self.check(body.get("notAfter") == first["notAfter"], "status: notAfter")
        self.expect_error("status without a client certificate",
                          self.json_call("GET", "/api/v1/certificate"), 401, "client_certificate_required")
        status, _, body = self.json_call("GET", "/api/v1/device-trust/verify?user=alice", cert=cert_a, key=key_a,
                                         domain=True)
        self.check(status == 200 and body == {"trusted": True, "serialNumber": first["serialNumber"],
                                              "state": "bound"}, f"verify: {status} {body}")
        status, _, body = self.json_call("GET", "/api/v1/certificate", cert=cert_a, key=key_a)
        self.check(status == 200 and body.get("state") == "bound" and body.get("boundUser") == "alice",
                   f"status after verify: {body}")
        status, _, body = self.json_call("GET", "/api/v1/device-trust/verify", domain=True)
        self.check(status == 403 and body.get("trusted") is False
                   and (body.get("error") or {}).get("code") == "client_certificate_required",
                   f"verify without a certificate: {status} {body}")

        key_b = self.key("p256")
        renew_body = {"clientVersion": "1.0.0", "csr": self.csr(key_b)}
        renewed = self.check_issued("renew", self.json_call("POST", "/api/v1/renew", renew_body, cert=cert_a,
                                                            key=key_a), dev_a)
        if renewed:
            self.check(renewed["state"] == "bound", "renew keeps the binding")
            self.check(renewed["serialNumber"] != first["serialNumber"], "renew: a new serial")
        self.expect_error("renew without a client certificate", self.json_call(
            "POST", "/api/v1/renew", renew_body), 401, "client_certificate_required")
        self.expect_error("renew with the same key", self.json_call(
            "POST", "/api/v1/renew", {"clientVersion": "1.0.0", "csr": csr_a}, cert=cert_a, key=key_a),
            400, "invalid_csr")
        status, _, body = self.json_call("GET", "/api/v1/certificate", cert=cert_a, key=key_a)
        self.check(status == 200 and body.get("state") == "superseded", f"old certificate superseded: {body}")
        status, _, body = self.json_call("GET", "/api/v1/device-trust/verify", cert=cert_a, key=key_a, domain=True)
        self.check(status == 200 and body.get("trusted") is True, f"superseded still verifies: {status} {body}")

        # Administration and revocation.
        self.expect_error("admin without token", self.json_call(
            "GET", f"/api/v1/admin/devices/{dev_a['udid']}"), 401, "invalid_token")
        self.expect_error("admin with the enrollment token", self.json_call(
            "GET", "/api/v1/admin/events", token=token), 401, "invalid_token")
        status, _, record = self.admin("GET", f"/api/v1/admin/devices/{dev_a['udid']}")
        self.check(status == 200, f"device lookup: {status}")
        if status == 200:
            self.check(record.get("udid") == dev_a["udid"] and record.get("serialNumber") == dev_a["serialNumber"],
                       "device lookup: identity")
            states = [c.get("state") for c in record.get("certificates", [])]
            self.check(states == ["superseded", "bound"], f"device lookup: states {states}")
            for cert in record.get("certificates", []):
                self.check(re.fullmatch(r"[0-9a-f]{64}", cert.get("spkiSha256", "")) is not None,
                           "device lookup: spkiSha256")
        status, _, body = self.admin("GET", "/api/v1/admin/devices/no-such-device")
        self.check(status == 404, f"unknown device: {status} {body}")

        status, _, body = self.admin("POST", f"/api/v1/admin/devices/{dev_a['udid']}/revoke")
        self.check(status == 200 and body == {"revoked": 2}, f"revoke device: {status} {body}")
        status, _, body = self.admin("POST", f"/api/v1/admin/devices/{dev_a['udid']}/revoke")
        self.check(status == 200 and body == {"revoked": 0}, f"revoke device again: {status} {body}")
        status, _, body = self.admin("POST", "/api/v1/admin/users/nobody/revoke")
        self.check(status == 200 and body == {"revoked": 0}, f"revoke unknown user: {status} {body}")
        status, _, body = self.json_call("GET", "/api/v1/certificate", cert=cert_a, key=key_a)
        self.check(status == 200 and body.get("state") == "revoked", f"revoked status: {status} {body}")
        self.expect_error("renew a revoked certificate", self.json_call(
            "POST", "/api/v1/renew", {"clientVersion": "1.0.0", "csr": self.csr(self.key())}, cert=cert_a,
            key=key_a), 403, "certificate_revoked")
        status, _, body = self.json_call("GET", "/api/v1/device-trust/verify", cert=cert_a, key=key_a, domain=True)
        self.check(status == 403 and body.get("trusted") is False
                   and (body.get("error") or {}).get("code") == "certificate_revoked",
                   f"verify a revoked certificate: {status} {body}")
        status, headers, page = self.request("GET", "/api/v1/device-trust/verify", cert=cert_a, key=key_a,
                                             domain=True, headers={"Accept": "text/html"})
        self.check(status == 403 and headers.get("content-type", "").startswith("text/html")
                   and b"Security requirements" in page, f"verify page: {status} {headers}")

        # The CRL.
        status, headers, crl = self.request("GET", "/crl")
        self.check(status == 200, f"crl: {status}")
        crl_path = self.path("ca.crl")
        with open(crl_path, "wb") as f:
            f.write(crl)
        text = self.openssl("crl", "-inform", "DER", "-in", crl_path, "-noout", "-text").decode()
        for serial in (first["serialNumber"], (renewed or {}).get("serialNumber", "")):
            self.check(serial.upper() in text, f"crl lists {serial}")

        # Events.
        status, _, body = self.admin("GET", "/api/v1/admin/events?limit=1000")
        self.check(status == 200, f"events: {status}")
        events = (body or {}).get("events", [])
        seen = {e.get("eventType") for e in events}
        self.check(set(EVENT_MESSAGES) <= seen, f"events: every type appears ({sorted(seen)})")
        for event in events:
            self.check(event.get("displayMessage") == EVENT_MESSAGES.get(event.get("eventType")),
                       f"event {event.get('id')}: display message")
            self.check(event.get("outcome") in ("SUCCESS", "FAILURE"), f"event {event.get('id')}: outcome")
            if event.get("outcome") == "FAILURE":
                self.check(bool(event.get("reason")), f"event {event.get('id')}: a failure has a reason")
        reasons = {e.get("reason") for e in events if e.get("outcome") == "FAILURE"}
        for code in ("invalid_request", "invalid_csr", "payload_too_large", "device_not_managed",
                     "enrollment_limit_reached", "certificate_revoked"):
            self.check(code in reasons, f"events: a FAILURE with reason {code}")
        # A request that did not authenticate (no or a wrong token, no client certificate)
        # is logged by the CA, never written as an event.
        for code in ("invalid_token", "client_certificate_required"):
            self.check(code not in reasons, f"events: no FAILURE with reason {code}")
        ids = [e.get("id") for e in events]
        self.check(ids == sorted(ids), "events: oldest first")
        if len(ids) > 2:
            status, _, body = self.admin("GET", f"/api/v1/admin/events?after={ids[0]}&limit=2")
            self.check([e.get("id") for e in (body or {}).get("events", [])] == ids[1:3], "events: paging")

        # Rate limit: 60 requests a minute per device, in a burst. The bucket refills one
        # request a second, so keep going until refused rather than counting to exactly 61.
        dev_r = managed[4]
        statuses = []
        while len(statuses) < 300:
            status, headers, body = self.enroll(dev_r, "@@@")
            statuses.append(status)
            if status != 400:
                break
        self.check(len(statuses) > 60 and set(statuses[:60]) == {400},
                   f"rate limit: the first 60 requests are processed ({len(statuses)} sent)")
        self.check(statuses[-1] == 429, f"rate limit: refused with 429 ({statuses[-1]})")
        self.check(((body or {}).get("error") or {}).get("code") == "rate_limited", "rate limit: code")
        self.check(headers.get("retry-after", "").isdigit(), f"rate limit: Retry-After {headers.get('retry-after')}")

def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--managed-devices", required=True, help="the CA's static device list (JSON)")
    args = parser.parse_args()
    info = json.loads(sys.stdin.readline())
    with open(args.managed_devices, encoding="utf-8") as f:
        devices = json.load(f)
    if len(devices) < 5:
        print("need at least 5 managed devices", file=sys.stderr)
        return 2
    os.umask(0o077)
    with tempfile.TemporaryDirectory(prefix="contract-") as workdir:
        contract = Contract(info, devices, workdir)
        try:
            contract.run()
        except Exception as e:  # report, don't hide, anything unexpected
            contract.failures.append(f"unexpected error: {e!r}")
            print(f"FAIL: unexpected error: {e!r}", file=sys.stderr)
    print(f"{contract.checks} checks, {len(contract.failures)} failures")
    return 1 if contract.failures else 0


if __name__ == "__main__":
    sys.exit(main())
