# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Unit tests for unbroken.training.sshd_config_info and its parsing in module_utils/sshd_config."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from ansible_collections.unbroken.training.plugins.module_utils import sshd_config as sc
from ansible_collections.unbroken.training.plugins.modules import sshd_config_info
from module_runner import run_module

SSHD_T_OUTPUT = """\
port 22
addressfamily any
listenaddress [::]:22
listenaddress 0.0.0.0:22
usepam yes
clientaliveinterval 0
clientalivecountmax 3
tcpkeepalive yes
hostkey /etc/ssh/ssh_host_rsa_key
hostkey /etc/ssh/ssh_host_ed25519_key
acceptenv LANG
acceptenv LC_*
subsystem sftp /usr/lib/openssh/sftp-server
authorizedkeysfile .ssh/authorized_keys .ssh/authorized_keys2
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    """A Debian-like /etc/ssh: Include at the top, then the main file's own settings."""
    write(
        tmp_path / "sshd_config",
        "# comment\n"
        f"Include {tmp_path}/sshd_config.d/*.conf\n"
        "ClientAliveInterval 120\n"
        "Match User backup\n"
        "    ClientAliveInterval 5\n",
    )
    (tmp_path / "sshd_config.d").mkdir()
    return tmp_path


# --- parsing sshd -T / ssh -G ---------------------------------------------------------------


def test_parse_effective_single_and_repeated_keywords() -> None:
    config = sc.parse_effective(SSHD_T_OUTPUT)
    assert config["clientaliveinterval"] == "0"
    assert config["tcpkeepalive"] == "yes"
    assert config["hostkey"] == ["/etc/ssh/ssh_host_rsa_key", "/etc/ssh/ssh_host_ed25519_key"]
    assert config["listenaddress"] == ["[::]:22", "0.0.0.0:22"]
    assert config["subsystem"] == "sftp /usr/lib/openssh/sftp-server"
    assert config["authorizedkeysfile"] == ".ssh/authorized_keys .ssh/authorized_keys2"


def test_parse_effective_lowercases_keys_and_skips_blank_lines() -> None:
    assert sc.parse_effective("ServerAliveInterval 60\n\n  \nHost foo\n") == {
        "serveraliveinterval": "60",
        "host": "foo",
    }


def test_listen_endpoints_map_wildcards_to_loopback_ipv4_first() -> None:
    endpoints = sc.listen_endpoints(sc.parse_effective(SSHD_T_OUTPUT))
    assert endpoints == [
        {"address": "0.0.0.0", "port": 22, "connect_address": "127.0.0.1"},
        {"address": "::", "port": 22, "connect_address": "::1"},
    ]
    single = sc.listen_endpoints({"listenaddress": "10.0.0.5:2222 rdomain 1"})
    assert single == [{"address": "10.0.0.5", "port": 2222, "connect_address": "10.0.0.5"}]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a b  c", ["a", "b", "c"]),
        ('"/etc/with space/*.conf" other', ["/etc/with space/*.conf", "other"]),
        ("/etc/ssh/x.conf # trailing comment", ["/etc/ssh/x.conf"]),
        ("LC_#notacomment", ["LC_#notacomment"]),
    ],
)
def test_split_args_follows_openssh_quoting(value: str, expected: list) -> None:
    assert sc.split_args(value) == expected


# --- -C connection specs --------------------------------------------------------------------


def test_connection_spec_keeps_canonical_order_and_drops_empty() -> None:
    spec = sc.build_connection_spec(
        {"addr": "192.0.2.1", "user": "alice", "host": "", "lport": 22, "laddr": None}
    )
    assert spec == "user=alice,addr=192.0.2.1,lport=22"
    assert sc.build_connection_spec({}) is None
    assert sc.build_connection_spec({"user": ""}) is None


@pytest.mark.parametrize("bad", ["a,b", "a b", "a=b", "a\nb", ""])
def test_connection_spec_refuses_injection(bad: str) -> None:
    if bad == "":
        assert sc.build_connection_spec({"user": bad}) is None
        return
    with pytest.raises(sc.ConfigError, match="must not contain"):
        sc.build_connection_spec({"user": bad})


def test_connection_spec_refuses_unknown_keys() -> None:
    with pytest.raises(sc.ConfigError, match="allowed: user, host, addr"):
        sc.build_connection_spec({"group": "wheel"})


# --- first value wins: file/line attribution ------------------------------------------------


def test_dropin_sorting_first_wins_over_ours_and_main_file(etc: Path) -> None:
    cloud_init = "PasswordAuthentication no\nClientAliveInterval 0\n"
    write(etc / "sshd_config.d/50-cloud-init.conf", cloud_init)
    write(etc / "sshd_config.d/60-unbroken.conf", "ClientAliveInterval 60\n")
    directives, files = sc.walk_config(str(etc / "sshd_config"))
    assert files == [
        str(etc / "sshd_config"),
        str(etc / "sshd_config.d/50-cloud-init.conf"),
        str(etc / "sshd_config.d/60-unbroken.conf"),
    ]
    sources = sc.sources_for(directives, ["ClientAliveInterval"])["clientaliveinterval"]
    assert [(Path(s["file"]).name, s["line"], s["value"]) for s in sources] == [
        ("50-cloud-init.conf", 2, "0"),
        ("60-unbroken.conf", 1, "60"),
        ("sshd_config", 3, "120"),
        ("sshd_config", 5, "5"),
    ]
    assert sources[-1]["conditional"] is True
    origin = sc.origin_of(sources)
    assert origin is not None
    assert origin["file"] == str(etc / "sshd_config.d/50-cloud-init.conf")
    assert origin["line"] == 2


def test_line_before_include_wins(tmp_path: Path) -> None:
    write(tmp_path / "d/00-unbroken.conf", "ClientAliveInterval 60\n")
    main = write(
        tmp_path / "sshd_config",
        "ClientAliveInterval = 15\nInclude d/*.conf\n",
    )
    directives = sc.walk_config(str(main))[0]
    origin = sc.origin_of(
        sc.sources_for(directives, ["clientaliveinterval"])["clientaliveinterval"]
    )
    assert origin == {"file": str(main), "line": 1, "value": "15", "conditional": False}


def test_include_glob_sorts_bytewise_and_skips_non_matching(etc: Path) -> None:
    write(etc / "sshd_config.d/10-b.conf", "ClientAliveCountMax 2\n")
    write(etc / "sshd_config.d/0-a.conf", "ClientAliveCountMax 9\n")
    write(etc / "sshd_config.d/00-z.conf.disabled", "ClientAliveCountMax 1\n")
    directives, files = sc.walk_config(str(etc / "sshd_config"))
    assert [Path(f).name for f in files] == ["sshd_config", "0-a.conf", "10-b.conf"]
    origin = sc.origin_of(
        sc.sources_for(directives, ["ClientAliveCountMax"])["clientalivecountmax"]
    )
    assert origin is not None
    assert Path(origin["file"]).name == "0-a.conf"


def test_match_block_in_included_file_ends_with_that_file(etc: Path) -> None:
    write(etc / "sshd_config.d/10-m.conf", "Match User bob\n  ClientAliveInterval 7\n")
    write(etc / "sshd_config.d/20-x.conf", "ClientAliveInterval 9\n")
    directives = sc.walk_config(str(etc / "sshd_config"))[0]
    sources = sc.sources_for(directives, ["clientaliveinterval"])["clientaliveinterval"]
    assert [(s["value"], s["conditional"]) for s in sources[:2]] == [("7", True), ("9", False)]
    origin = sc.origin_of(sources)
    assert origin is not None
    assert origin["value"] == "9"


def test_match_all_returns_to_global_context(tmp_path: Path) -> None:
    main = write(
        tmp_path / "sshd_config",
        "Match Address 10.0.0.0/8\n TCPKeepAlive no\nMatch all\nTCPKeepAlive yes\n",
    )
    directives = sc.walk_config(str(main))[0]
    origin = sc.origin_of(sc.sources_for(directives, ["tcpkeepalive"])["tcpkeepalive"])
    assert origin is not None
    assert origin["line"] == 4


def test_include_inside_match_is_conditional(tmp_path: Path) -> None:
    write(tmp_path / "d/a.conf", "ClientAliveInterval 1\n")
    main = write(tmp_path / "sshd_config", "Match User x\n Include d/a.conf\n")
    directives = sc.walk_config(str(main))[0]
    sources = sc.sources_for(directives, ["clientaliveinterval"])["clientaliveinterval"]
    assert sources[0]["conditional"] is True
    assert sc.origin_of(sources) is None
    assert not sc.is_included(str(main), str(tmp_path / "d/a.conf"))


def test_include_loop_is_reported(tmp_path: Path) -> None:
    main = write(tmp_path / "sshd_config", f"Include {tmp_path}/sshd_config\n")
    with pytest.raises(sc.ConfigError, match="nested too deep"):
        sc.walk_config(str(main))


def test_is_included_for_a_file_that_does_not_exist_yet(etc: Path) -> None:
    main = str(etc / "sshd_config")
    assert sc.is_included(main, str(etc / "sshd_config.d/00-unbroken-keepalive.conf"))
    assert not sc.is_included(main, str(etc / "sshd_config.d/00-unbroken-keepalive.txt"))
    assert not sc.is_included(main, str(etc / "sshd_config.d/sub/00-x.conf"))
    bare = write(etc / "bare_config", "Port 22\n")
    assert not sc.is_included(str(bare), str(etc / "sshd_config.d/00-unbroken-keepalive.conf"))


# --- client side: Host blocks ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "host", "expected"),
    [
        (["*"], "gpu01", True),
        (["gpu*", "!gpu13"], "gpu01", True),
        (["gpu*", "!gpu13"], "gpu13", False),
        (["!gpu13"], "gpu01", False),
        (["*.cluster"], "GPU01.Cluster", True),
        (["login?"], "login12", False),
    ],
)
def test_host_matches(patterns: list, host: str, expected: bool) -> None:
    assert sc.host_matches(patterns, host) is expected


def test_client_host_blocks_are_evaluated(tmp_path: Path) -> None:
    write(tmp_path / "ssh_config.d/00-unbroken.conf", "Host *\n  ServerAliveInterval 60\n")
    main = write(
        tmp_path / "ssh_config",
        "Host gpu*\n  ServerAliveInterval 5\nHost *\nInclude ssh_config.d/*.conf\n",
    )
    directives = sc.walk_config(str(main), client_host="login1")[0]
    sources = sc.sources_for(directives, ["serveraliveinterval"])["serveraliveinterval"]
    assert [s["value"] for s in sources] == ["60"]
    directives = sc.walk_config(str(main), client_host="gpu7")[0]
    origin = sc.origin_of(
        sc.sources_for(directives, ["serveraliveinterval"])["serveraliveinterval"]
    )
    assert origin is not None
    assert (origin["line"], origin["value"]) == (2, "5")
    assert sc.is_included(str(main), str(tmp_path / "ssh_config.d/00-x.conf"), client_host="h")


# --- comparison messages --------------------------------------------------------------------


def test_compare_names_the_shadowing_file_and_line(etc: Path) -> None:
    shadow = write(etc / "sshd_config.d/50-cloud-init.conf", "ClientAliveInterval 0\n")
    directives = sc.walk_config(str(etc / "sshd_config"))[0]
    expected = {"ClientAliveInterval": 60, "ClientAliveCountMax": 3, "TCPKeepAlive": True}
    sources = sc.sources_for(directives, list(expected))
    mismatches = sc.compare(sc.parse_effective(SSHD_T_OUTPUT), expected, sources)
    assert [m["keyword"] for m in mismatches] == ["ClientAliveInterval"]
    message = mismatches[0]["message"]
    assert f"{shadow} line 1" in message
    assert "ClientAliveInterval is 0, expected 60" in message
    assert "first value" in message


def test_compare_without_a_setting_line_says_so() -> None:
    mismatches = sc.compare({"tcpkeepalive": "yes"}, {"TCPKeepAlive": False}, {})
    assert mismatches[0]["origin"] is None
    assert "no configuration line sets it" in mismatches[0]["message"]


# --- the module -----------------------------------------------------------------------------


class FakeRun:
    """Stands in for AnsibleModule.run_command; records the argv."""

    def __init__(self, rc: int = 0, out: str = SSHD_T_OUTPUT, err: str = "") -> None:
        self.rc, self.out, self.err = rc, out, err
        self.commands: list = []
        # What Debian 12's sshd -V prints (on stderr, exit status 0).
        self.version_output = (0, "", "OpenSSH_9.2, OpenSSL 3.0.19 27 Jan 2026\n")

    def record(self, args: list, **kwargs: object) -> tuple:
        self.commands.append(list(args))
        assert kwargs.get("environ_update") == {"LC_ALL": "C"}
        if args[1:] == ["-V"]:
            return self.version_output
        return self.rc, self.out, self.err


@pytest.fixture
def fake_sshd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeRun:
    run = FakeRun()
    monkeypatch.setattr(
        sshd_config_info.AnsibleModule,
        "run_command",
        lambda self, args, **kwargs: run.record(args, **kwargs),
    )
    monkeypatch.setattr(
        sshd_config_info.AnsibleModule,
        "get_bin_path",
        lambda self, name, required=False, opt_dirs=None: f"/usr/sbin/{name}",
    )
    return run


def test_module_returns_effective_config_and_origins(etc: Path, fake_sshd: FakeRun) -> None:
    write(etc / "sshd_config.d/50-cloud-init.conf", "ClientAliveInterval 0\n")
    result = run_module(
        sshd_config_info,
        {
            "config_file": str(etc / "sshd_config"),
            "expect": {"ClientAliveInterval": 60, "TCPKeepAlive": True},
            "keywords": ["UsePAM"],
            "included_file": str(etc / "sshd_config.d/00-unbroken-keepalive.conf"),
        },
    )
    assert result["changed"] is False
    assert fake_sshd.commands == [
        ["/usr/sbin/sshd", "-T", "-f", str(etc / "sshd_config")],
        ["/usr/sbin/sshd", "-V"],
    ]
    assert result["version"] == "9.2"
    assert result["client_alive_probe_factor"] == 2
    assert result["config"]["clientalivecountmax"] == "3"
    assert result["origins"]["clientaliveinterval"]["file"].endswith("50-cloud-init.conf")
    assert result["origins"]["usepam"] is None
    assert [m["keyword"] for m in result["mismatches"]] == ["ClientAliveInterval"]
    assert result["included"] is True
    assert result["listen"][0]["connect_address"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("version_output", "version", "factor"),
    [
        ((0, "", "OpenSSH_9.2, OpenSSL 3.0.19 27 Jan 2026\n"), "9.2", 2),
        ((0, "", "OpenSSH_9.4p1 Ubuntu-1, OpenSSL 3.0.10\n"), "9.4", 2),
        ((0, "", "OpenSSH_9.5p1, OpenSSL 3.1.4\n"), "9.5", 1),
        ((0, "", "OpenSSH_10.0p2 Debian-7, OpenSSL 3.5.1\n"), "10.0", 1),
        ((0, "", "OpenSSH_9.1p1, OpenSSL 3.0.7\n"), "9.1", 1),
        # OpenSSH 8.x sshd has no -V: it prints the version above its usage, exit status 1.
        (
            (1, "", "unknown option -- V\nOpenSSH_8.7p1, OpenSSL 3.0.7\nusage: sshd [-46D]\n"),
            "8.7",
            1,
        ),
        ((1, "", "sshd: unknown option\n"), None, 1),
    ],
)
def test_module_reports_version_and_probe_factor(
    etc: Path, fake_sshd: FakeRun, version_output: tuple, version: object, factor: int
) -> None:
    fake_sshd.version_output = version_output
    result = run_module(sshd_config_info, {"config_file": str(etc / "sshd_config")})
    assert result["version"] == version
    assert result["client_alive_probe_factor"] == factor


def test_module_passes_connection_spec(etc: Path, fake_sshd: FakeRun) -> None:
    result = run_module(
        sshd_config_info,
        {
            "config_file": str(etc / "sshd_config"),
            "connection": {"user": "backup", "addr": "192.0.2.7", "lport": 22},
        },
    )
    assert fake_sshd.commands[0][-2:] == ["-C", "user=backup,addr=192.0.2.7,lport=22"]
    assert result["connection_spec"] == "user=backup,addr=192.0.2.7,lport=22"


def test_module_refuses_spec_injection(etc: Path, fake_sshd: FakeRun) -> None:
    result = run_module(
        sshd_config_info,
        {"config_file": str(etc / "sshd_config"), "connection": {"user": "x,addr=1.2.3.4"}},
        fails=True,
    )
    assert "must not contain" in result["msg"]
    assert fake_sshd.commands == []


def test_module_is_read_only_in_check_mode(etc: Path, fake_sshd: FakeRun) -> None:
    before = {p: p.read_text() for p in etc.rglob("*") if p.is_file()}
    result = run_module(
        sshd_config_info, {"config_file": str(etc / "sshd_config")}, check_mode=True
    )
    assert result["changed"] is False
    assert result["config"]["clientaliveinterval"] == "0"
    assert fake_sshd.commands, "check mode still reads the effective configuration"
    assert {p: p.read_text() for p in etc.rglob("*") if p.is_file()} == before


def test_module_fails_with_sshd_message(etc: Path, fake_sshd: FakeRun) -> None:
    fake_sshd.rc, fake_sshd.out = 255, ""
    fake_sshd.err = "/etc/ssh/sshd_config.d/a.conf: line 1: Bad configuration option: Bogus\n"
    result = run_module(sshd_config_info, {"config_file": str(etc / "sshd_config")}, fails=True)
    assert "Bad configuration option: Bogus" in result["msg"]
    assert result["rc"] == 255


def test_module_fails_when_sshd_missing(etc: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        sshd_config_info.AnsibleModule,
        "get_bin_path",
        lambda self, name, required=False, opt_dirs=None: None,
    )
    result = run_module(sshd_config_info, {"config_file": str(etc / "sshd_config")}, fails=True)
    assert "sshd not found" in result["msg"]
    assert "openssh-server" in result["msg"]


def test_module_fails_when_given_binary_is_not_executable(etc: Path, fake_sshd: FakeRun) -> None:
    result = run_module(
        sshd_config_info,
        {"config_file": str(etc / "sshd_config"), "binary": str(etc / "sshd_config")},
        fails=True,
    )
    assert "not an executable" in result["msg"]
    assert fake_sshd.commands == []


def test_module_fails_when_config_missing(tmp_path: Path, fake_sshd: FakeRun) -> None:
    result = run_module(sshd_config_info, {"config_file": str(tmp_path / "nope")}, fails=True)
    assert "does not exist" in result["msg"]


def test_module_client_target_needs_host(etc: Path, fake_sshd: FakeRun) -> None:
    result = run_module(
        sshd_config_info, {"target": "ssh", "config_file": str(etc / "sshd_config")}, fails=True
    )
    assert "host is required" in result["msg"]


def test_module_client_target_runs_ssh_g(tmp_path: Path, fake_sshd: FakeRun) -> None:
    main = write(tmp_path / "ssh_config", "Host *\n  ServerAliveInterval 30\n")
    fake_sshd.out = "host gpu01\nserveraliveinterval 30\nserveralivecountmax 3\n"
    result = run_module(
        sshd_config_info,
        {
            "target": "ssh",
            "host": "gpu01",
            "config_file": str(main),
            "expect": {"ServerAliveInterval": 60},
        },
    )
    assert fake_sshd.commands == [
        ["/usr/sbin/ssh", "-G", "-F", str(main), "--", "gpu01"],
        ["/usr/sbin/ssh", "-V"],
    ]
    assert result["client_alive_probe_factor"] is None
    assert result["listen"] == []
    assert "line 2" in result["mismatches"][0]["message"]


@pytest.mark.skipif(shutil.which("ssh") is None, reason="openssh-client is not installed")
def test_module_with_real_ssh_client(tmp_path: Path) -> None:
    write(tmp_path / "ssh_config.d/00-unbroken.conf", "Host *\n  ServerAliveInterval 60\n")
    write(tmp_path / "ssh_config.d/00-aaa.conf", "Host gpu*\n  ServerAliveInterval 7\n")
    main = write(tmp_path / "ssh_config", f"Include {tmp_path}/ssh_config.d/*.conf\n")
    expect = {"ServerAliveInterval": 60}
    ok = run_module(
        sshd_config_info,
        {"target": "ssh", "host": "login1", "config_file": str(main), "expect": expect},
    )
    assert ok["config"]["serveraliveinterval"] == "60"
    assert ok["mismatches"] == []
    bad = run_module(
        sshd_config_info,
        {"target": "ssh", "host": "gpu3", "config_file": str(main), "expect": expect},
    )
    assert bad["config"]["serveraliveinterval"] == "7"
    assert bad["mismatches"][0]["origin"]["file"] == str(tmp_path / "ssh_config.d/00-aaa.conf")


# --- compensate_slow_probes: the "before" read compares what the role writes ------------------


@pytest.mark.parametrize(
    ("version_output", "requested", "compared"),
    [
        ((0, "", "OpenSSH_9.2, OpenSSL 3.0.19 27 Jan 2026\n"), 60, 30),
        ((0, "", "OpenSSH_9.4p1 Ubuntu-1, OpenSSL 3.0.10\n"), "45", 22),
        ((0, "", "OpenSSH_9.2, OpenSSL 3.0.19 27 Jan 2026\n"), 1, 1),
        ((0, "", "OpenSSH_9.5p1, OpenSSL 3.1.4\n"), 60, 60),
        ((1, "", "sshd: unknown option\n"), 60, 60),
    ],
)
def test_module_compensates_the_expected_interval_for_slow_probes(
    etc: Path, fake_sshd: FakeRun, version_output: tuple, requested: object, compared: int
) -> None:
    fake_sshd.version_output = version_output
    fake_sshd.out = SSHD_T_OUTPUT.replace(
        "clientaliveinterval 0", f"clientaliveinterval {compared}"
    )
    result = run_module(
        sshd_config_info,
        {
            "config_file": str(etc / "sshd_config"),
            "expect": {"ClientAliveInterval": requested, "ClientAliveCountMax": 3},
            "compensate_slow_probes": True,
        },
    )
    assert result["expected"] == {"ClientAliveInterval": compared, "ClientAliveCountMax": 3}
    assert result["mismatches"] == []


def test_module_compensated_mismatch_names_the_halved_value(etc: Path, fake_sshd: FakeRun) -> None:
    write(etc / "sshd_config.d/00-aaa-site.conf", "ClientAliveInterval 0\n")
    result = run_module(
        sshd_config_info,
        {
            "config_file": str(etc / "sshd_config"),
            "expect": {"clientaliveinterval": 60},
            "compensate_slow_probes": True,
        },
    )
    assert result["expected"] == {"clientaliveinterval": 30}
    message = result["mismatches"][0]["message"]
    assert "clientaliveinterval is 0, expected 30" in message
    assert "00-aaa-site.conf line 1" in message


def test_module_without_compensation_compares_as_given(etc: Path, fake_sshd: FakeRun) -> None:
    result = run_module(
        sshd_config_info,
        {"config_file": str(etc / "sshd_config"), "expect": {"ClientAliveInterval": 60}},
    )
    assert result["client_alive_probe_factor"] == 2
    assert result["expected"] == {"ClientAliveInterval": 60}
    assert result["mismatches"][0]["expected"] == "60"


def test_module_compensates_an_interval_in_sshd_time_format(etc: Path, fake_sshd: FakeRun) -> None:
    """sshd reads 1m as 60 (sshd -T -o ClientAliveInterval=1m prints 60): so do we."""
    fake_sshd.out = SSHD_T_OUTPUT.replace("clientaliveinterval 0", "clientaliveinterval 30")
    result = run_module(
        sshd_config_info,
        {
            "config_file": str(etc / "sshd_config"),
            "expect": {"ClientAliveInterval": "1m"},
            "compensate_slow_probes": True,
        },
    )
    assert result["expected"] == {"ClientAliveInterval": 30}
    assert result["mismatches"] == []


def test_module_refuses_compensation_of_a_value_that_is_not_a_time(
    etc: Path, fake_sshd: FakeRun
) -> None:
    result = run_module(
        sshd_config_info,
        {
            "config_file": str(etc / "sshd_config"),
            "expect": {"ClientAliveInterval": "1.5"},
            "compensate_slow_probes": True,
        },
        fails=True,
    )
    assert "is not a time sshd reads" in result["msg"]


def test_module_refuses_compensation_for_the_client(tmp_path: Path, fake_sshd: FakeRun) -> None:
    main = write(tmp_path / "ssh_config", "Host *\n")
    result = run_module(
        sshd_config_info,
        {"target": "ssh", "host": "h", "config_file": str(main), "compensate_slow_probes": True},
        fails=True,
    )
    assert "only for target=sshd" in result["msg"]
    assert fake_sshd.commands == []


# --- time formats (sshd_config(5), TIME FORMATS) --------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("60", 60),
        (60, 60),
        ("1m", 60),
        ("1m30s", 90),
        ("1M30S", 90),
        ("2h", 7200),
        ("1w1d", 691200),
        ("10s5", 15),
        ("0", 0),
    ],
)
def test_parse_seconds_reads_what_sshd_reads(value: object, seconds: int) -> None:
    assert sc.parse_seconds(value) == seconds


@pytest.mark.parametrize("bad", ["", "1.5", "-5", "+5", " 60", "1x", "m", True, 1.5, "99999999999"])
def test_parse_seconds_refuses_what_sshd_refuses(bad: object) -> None:
    with pytest.raises(sc.ConfigError):
        sc.parse_seconds(bad)


@pytest.mark.parametrize(
    ("requested", "factor", "written"),
    [(60, 2, 30), ("1m", 2, 30), ("45", 2, 22), (1, 2, 1), ("1m30s", 1, 90)],
)
def test_probe_interval_halves_only_for_slow_probes(
    requested: object, factor: int, written: int
) -> None:
    assert sc.probe_interval(requested, factor) == written


def test_compare_reads_time_formats_as_seconds() -> None:
    assert sc.compare({"clientaliveinterval": "60"}, {"ClientAliveInterval": "1m"}, {}) == []
    found = sc.compare({"clientaliveinterval": "60"}, {"ClientAliveInterval": "1m30s"}, {})
    assert "ClientAliveInterval is 60, expected 90" in found[0]["message"]


def test_compare_names_the_requested_value_beside_the_halved_one(etc: Path) -> None:
    write(etc / "sshd_config.d/00-aaa.conf", "ClientAliveInterval 0\n")
    sources = sc.sources_for(sc.walk_config(str(etc / "sshd_config"))[0], ["ClientAliveInterval"])
    found = sc.compare(
        {"clientaliveinterval": "0"},
        {"ClientAliveInterval": 30},
        sources,
        requested={"ClientAliveInterval": 60},
    )
    assert "ClientAliveInterval is 0, expected 30 (60 requested" in found[0]["message"]


# --- Match blocks (item: a Match block that turns keepalive off) ----------------------------


def test_match_lines_are_found_with_file_and_line(etc: Path) -> None:
    write(etc / "sshd_config.d/50-site.conf", "Match Address 10.0.0.0/8,!10.9.9.9 User ad*\n")
    found = sc.match_lines(str(etc / "sshd_config"))
    assert [m.describe() for m in found] == [
        f"{etc}/sshd_config.d/50-site.conf line 1: Match Address 10.0.0.0/8,!10.9.9.9 User ad*",
        f"{etc}/sshd_config line 4: Match User backup",
    ]


@pytest.mark.parametrize(
    ("criteria", "connection"),
    [
        ("User root", {"user": "root"}),
        ("User ad*", {"user": "adx"}),
        ("User !root", {"user": "nobody"}),
        ("Address 10.0.0.0/8", {"addr": "10.0.0.1"}),
        ("Address 172.16.*", {"addr": "172.16.1.1"}),
        ("Address 10.1?.0.5", {"addr": "10.11.0.5"}),
        ("Host *.example.org LocalPort 2222", {"host": "x.example.org", "lport": "2222"}),
        ("Group train", {"user": "alice"}),
    ],
)
def test_match_connection_satisfies_the_criteria(criteria: str, connection: dict) -> None:
    made, reason = sc.match_connection(
        sc.MatchLine("f", 1, criteria), lambda group: "alice" if group == "train" else None
    )
    assert reason == ""
    assert made == {**sc.DEFAULT_CONNECTION, **connection}


@pytest.mark.parametrize(
    ("criteria", "reason"),
    [
        ("Group nobody-here", "no user is known"),
        ("Exec /bin/true", "cannot be given"),
        # The only address made up is the negated one: say so rather than check another.
        ("Address 10.1?.0.5,!10.11.0.5", "no Address matching"),
    ],
)
def test_match_connection_says_why_it_cannot(criteria: str, reason: str) -> None:
    made, why = sc.match_connection(sc.MatchLine("f", 1, criteria), lambda group: None)
    assert made is None
    assert reason in why


def test_module_checks_every_match_block_and_names_its_line(etc: Path, fake_sshd: FakeRun) -> None:
    """sshd -T alone says 60; sshd -T -C user=backup says 5, from the Match block."""
    global_out = SSHD_T_OUTPUT.replace("clientaliveinterval 0", "clientaliveinterval 60")
    matched_out = SSHD_T_OUTPUT.replace("clientaliveinterval 0", "clientaliveinterval 5")

    def record(args: list, **kwargs: object) -> tuple:
        fake_sshd.commands.append(list(args))
        if args[1:] == ["-V"]:
            return fake_sshd.version_output
        return 0, matched_out if "-C" in args else global_out, ""

    fake_sshd.record = record  # type: ignore[method-assign]
    result = run_module(
        sshd_config_info,
        {
            "config_file": str(etc / "sshd_config"),
            "expect": {"ClientAliveInterval": 60},
            "check_match_blocks": True,
            "match_contexts": [{"user": "alice", "addr": "198.51.100.7"}],
            "included_file": str(etc / "sshd_config.d/00-unbroken-keepalive.conf"),
        },
    )
    specs = [c[-1] for c in fake_sshd.commands if "-C" in c]
    assert specs == [
        "user=backup,host=client.invalid,addr=192.0.2.1",
        "user=alice,host=client.invalid,addr=198.51.100.7",
    ]
    # Both connections see 5 from the same line: reported once.
    assert len(result["mismatches"]) == 1
    message = result["mismatches"][0]["message"]
    assert "ClientAliveInterval is 5 for connections like user=backup" in message
    assert f"{etc}/sshd_config line 5 sets 'ClientAliveInterval 5'" in message
    assert f"in the block of {etc}/sshd_config line 4: Match User backup" in message
    assert result["shadowed"] == result["mismatches"]


def test_module_does_not_check_match_blocks_unless_asked(etc: Path, fake_sshd: FakeRun) -> None:
    run_module(
        sshd_config_info,
        {"config_file": str(etc / "sshd_config"), "expect": {"ClientAliveInterval": 0}},
    )
    assert not [c for c in fake_sshd.commands if "-C" in c]


# --- check mode: predicting the refusal -----------------------------------------------------


def test_shadowed_predicts_a_dropin_that_sorts_before_ours(etc: Path, fake_sshd: FakeRun) -> None:
    """Ours is not written yet; a drop-in sorting first would still win once it is."""
    write(etc / "sshd_config.d/00-aaa-site.conf", "# site\nClientAliveInterval 0\n")
    write(etc / "sshd_config.d/50-later.conf", "ClientAliveCountMax 9\n")
    result = run_module(
        sshd_config_info,
        {
            "config_file": str(etc / "sshd_config"),
            "expect": {"ClientAliveInterval": 60, "ClientAliveCountMax": 3},
            "compensate_slow_probes": True,
            "included_file": str(etc / "sshd_config.d/00-unbroken-keepalive.conf"),
        },
    )
    assert [found["keyword"] for found in result["shadowed"]] == ["ClientAliveInterval"]
    message = result["shadowed"][0]["message"]
    assert "ClientAliveInterval would be 0, expected 30 (60 requested" in message
    assert "00-aaa-site.conf line 2" in message


def test_shadowed_is_empty_when_our_include_would_come_first(
    tmp_path: Path, fake_sshd: FakeRun
) -> None:
    main = write(tmp_path / "sshd_config", "ClientAliveInterval 0\n")
    result = run_module(
        sshd_config_info,
        {
            "config_file": str(main),
            "expect": {"ClientAliveInterval": 60},
            "included_file": str(tmp_path / "sshd_config.d/00-unbroken-keepalive.conf"),
        },
    )
    assert result["included"] is False
    assert result["mismatches"], "today's value is not ours"
    assert result["shadowed"] == [], "the Include goes above line 1"
