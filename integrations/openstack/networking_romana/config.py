"""The ``[romana]`` section of Neutron's configuration."""

from oslo_config import cfg

OPTS = [
    cfg.StrOpt("url", help="romanad's URL, e.g. http://romanad:9600 (https with TLS)."),
    cfg.StrOpt("username", default="neutron", help="A romanad user with the service role."),
    cfg.StrOpt("password", secret=True, help="Its password."),
    cfg.StrOpt("password_file", help="Or a file holding the password (first line)."),
    cfg.StrOpt("ca_file", help="CA certificate (PEM) that signed romanad's certificate."),
    cfg.PortOpt("agent_port", default=9604, help="Port of romana-agent's /vm API on compute hosts "
                "(used when romanad's host record has none)."),
    cfg.FloatOpt("timeout", default=10.0, help="Seconds per HTTP call."),
]

cfg.CONF.register_opts(OPTS, "romana")


def list_opts():
    return [("romana", OPTS)]


def settings(conf=None):
    """The section as a plain dict, with the password read from its file when given."""
    c = (conf or cfg.CONF).romana
    password = c.password
    if c.password_file:
        with open(c.password_file, encoding="utf-8") as f:
            password = f.readline().strip()
    if not c.url:
        raise ValueError("[romana] url is not set")
    if not password:
        raise ValueError("[romana] password (or password_file) is not set: "
                         "networking-romana never talks to romanad without authentication")
    return {"url": c.url, "username": c.username, "password": password, "ca_file": c.ca_file,
            "agent_port": c.agent_port, "timeout": c.timeout}
