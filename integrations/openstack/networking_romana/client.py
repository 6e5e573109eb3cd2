"""romanad's REST API as the drivers use it, over the standard library's HTTP client.

Authenticates as a ``service`` user: logs in, sends ``Authorization: Bearer``, and on a 401
refreshes the token (``POST /auth/refresh``) or logs in again, then retries once. Never talks
to romanad without a token. Knows nothing of Neutron.
"""

import json
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request


class RomanaError(Exception):
    """A failed call, with the method, URL, status and romanad's message."""

    def __init__(self, method, url, status, message):
        super().__init__("%s %s: %s %s" % (method, url, status, message))
        self.status = status
        self.message = message


def _message(body):
    try:
        doc = json.loads(body)
        if isinstance(doc, dict):
            return doc.get("message") or doc.get("error") or body
    except ValueError:
        pass
    return body


def http(method, url, body=None, headers=None, timeout=10.0, context=None):
    """One JSON call: returns (status, decoded body or None). Errors raise RomanaError."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            raw = resp.read().decode()
            return resp.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raise RomanaError(method, url, e.code, _message(e.read().decode(errors="replace"))) from None
    except urllib.error.URLError as e:
        raise RomanaError(method, url, 0, "cannot connect: %s" % e.reason) from None


class Client:
    """romanad with a service credential (token login and refresh)."""

    def __init__(self, url, username, password, ca_file=None, timeout=10.0, **_ignored):
        if not password:
            raise ValueError("a romanad password is required (authentication is never off)")
        self.url = url.rstrip("/")
        self.username = username
        self.password = password
        self.timeout = timeout
        self.context = ssl.create_default_context(cafile=ca_file) if ca_file else None
        self._lock = threading.Lock()
        self._access = None
        self._refresh = None

    # -- tokens ------------------------------------------------------------------------------
    def _store(self, tokens):
        self._access = tokens["access_token"]
        self._refresh = tokens.get("refresh_token")

    def login(self):
        _, t = http("POST", self.url + "/auth/login",
                    {"username": self.username, "password": self.password},
                    timeout=self.timeout, context=self.context)
        self._store(t)

    def _renew(self):
        if self._refresh:
            try:
                _, t = http("POST", self.url + "/auth/refresh", {"refresh_token": self._refresh},
                            timeout=self.timeout, context=self.context)
                self._store(t)
                return
            except RomanaError as e:
                if e.status not in (400, 401, 403):
                    raise
        self.login()

    def call(self, method, path, body=None):
        with self._lock:
            if self._access is None:
                self.login()
            token = self._access
        try:
            return http(method, self.url + path, body, {"Authorization": "Bearer " + token},
                        self.timeout, self.context)[1]
        except RomanaError as e:
            if e.status != 401:
                raise
        with self._lock:
            if self._access == token:  # nobody renewed meanwhile
                self._renew()
            token = self._access
        return http(method, self.url + path, body, {"Authorization": "Bearer " + token},
                    self.timeout, self.context)[1]

    # -- what the drivers need -----------------------------------------------------------------
    def ensure_tenant(self, project_id):
        """The Romana tenant of a project (created on first use; tenant = project)."""
        try:
            self.call("POST", "/tenants", {"name": project_id, "external_id": project_id})
        except RomanaError as e:
            if e.status != 409:
                raise

    def ensure_segment(self, project_id, network_id):
        """The segment of a network within its project's tenant (segment = network)."""
        self.ensure_tenant(project_id)
        try:
            self.call("POST", "/tenants/%s/segments" % urllib.parse.quote(project_id, safe=""),
                      {"name": network_id})
        except RomanaError as e:
            if e.status != 409:
                raise

    def allocate(self, name, host, tenant, segment, ip=None, family=None):
        """An address for ``name`` (a port id) on ``host``: the address record. ``family``
        (``ipv4`` or ``ipv6``) draws from that family's networks only; romanad names a port's
        IPv6 address ``<name>#v6`` when the host also draws IPv4 for the tenant."""
        body = {"name": name, "host": host, "tenant": tenant, "segment": segment}
        if ip:
            body["ip"] = ip
        path = "/addresses" + ("?family=" + family if family else "")
        return self.call("POST", path, body)

    def networks(self):
        """romanad's networks: ``[{name, cidr, ...}]``."""
        return self.call("GET", "/networks")

    def release(self, name_or_ip):
        """Releases an address; one already gone is not an error."""
        try:
            self.call("DELETE", "/addresses/%s" % urllib.parse.quote(name_or_ip, safe=""))
        except RomanaError as e:
            if e.status != 404:
                raise

    def address(self, name_or_ip):
        try:
            return self.call("GET", "/addresses/%s" % urllib.parse.quote(name_or_ip, safe=""))
        except RomanaError as e:
            if e.status == 404:
                return None
            raise

    def host(self, name):
        return self.call("GET", "/hosts/%s" % urllib.parse.quote(name, safe=""))

    # -- security groups: policies and endpoint labels ------------------------------------------
    def _gone_ok(self, method, path, body=None):
        """A call whose 404 means "already done" (deletes)."""
        try:
            return self.call(method, path, body)
        except RomanaError as e:
            if e.status != 404:
                raise
            return None

    def apply_policy(self, policy):
        """Creates or replaces a policy in romanad's NetworkPolicy form."""
        return self.call("POST", "/networkpolicies", policy)

    def delete_policy(self, namespace, name):
        q = urllib.parse.quote
        return self._gone_ok("DELETE", "/networkpolicies/%s/%s" % (q(namespace, safe=""), q(name, safe="")))

    def policies(self):
        """(namespace, name) of every NetworkPolicy romanad holds."""
        return [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in self.call("GET", "/networkpolicies")]

    def kubernetes_tenants(self):
        """Names of the tenants the Kubernetes controller owns (namespaces): never ours to clean."""
        return {t["name"] for t in self.call("GET", "/tenants")
                if (t.get("labels") or {}).get("romana.io/managed-by") == "romana-k8s"}

    def put_endpoint(self, record):
        """Registers an endpoint (the address must be IPAM's: name, ip, tenant, segment, host)."""
        return self.call("PUT", "/endpoints/%s" % urllib.parse.quote(record["name"], safe=""), record)

    def set_labels(self, name, labels):
        """Replaces an endpoint's labels; False when the endpoint is not registered."""
        return self._gone_ok("PUT", "/endpoints/%s/labels" % urllib.parse.quote(name, safe=""),
                             {"labels": labels}) is not None

    def delete_endpoint(self, name):
        return self._gone_ok("DELETE", "/endpoints/%s" % urllib.parse.quote(name, safe=""))


def agent_call(method, host_ip, port, path, body=None, timeout=10.0):
    """romana-agent's /vm API on a compute host (served without tokens, management network)."""
    return http(method, "http://%s:%s%s" % (host_ip, port, path), body, timeout=timeout)[1]
