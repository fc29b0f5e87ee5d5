"""Confinement's pure parts: Docker's capability rules, the security options, binds,
mounts, tmpfs and devices at the API's edge, and the plan a container gets."""

from __future__ import annotations

import json

import pytest

from cnm.container_requests import ContainerCreate
from cnm.errors import InvalidParameter
from cnm.render_container import confinement_json
from cnm.runtime import caps, confine, linux
from cnm.runtime import confine_opts as co
from cnm.runtime.spec import ContainerSpec

ALL = frozenset(caps.NAMES)
HOST = confine.HostFacts(
    available=ALL - {"CAP_SYS_RESOURCE"},
    last_cap=40,
    machine="x86_64",
    kernel=(6, 18),
    hide=("/var/lib/cnm", "/run/cnm", "/srv/cnm.sock"),
)


# --- capabilities -------------------------------------------------------------------------


def test_docker_default_set_is_fourteen_and_its_mask():
    assert len(caps.DEFAULT) == 14
    assert caps.mask(caps.DEFAULT) == 0xA80425FB
    assert caps.names(0xA80425FB) == caps.DEFAULT


@pytest.mark.parametrize(
    "add, drop, privileged, want",
    [
        ([], [], False, caps.DEFAULT),
        (["net_admin"], [], False, caps.DEFAULT | {"CAP_NET_ADMIN"}),
        (
            ["CAP_SYS_PTRACE"],
            ["MKNOD", "cap_net_raw"],
            False,
            caps.DEFAULT - {"CAP_MKNOD", "CAP_NET_RAW"} | {"CAP_SYS_PTRACE"},
        ),
        (["ALL"], ["NET_ADMIN"], False, HOST.available - {"CAP_NET_ADMIN"}),
        (["KILL", "CHOWN"], ["ALL"], False, {"CAP_KILL", "CAP_CHOWN"}),
        ([], ["all"], False, frozenset()),
        (["NET_ADMIN"], ["ALL"], True, HOST.available),
    ],
)
def test_capability_rules_are_dockers(add, drop, privileged, want):
    assert caps.effective_set(add, drop, privileged, HOST.available) == want


def test_unknown_and_unavailable_capabilities_are_named():
    with pytest.raises(InvalidParameter, match='--cap-add: unknown capability: "CAP_FLY"'):
        caps.effective_set(["fly"], [], False, HOST.available)
    with pytest.raises(InvalidParameter, match='not available in the current environment: "CAP_SYS_RESOURCE"'):
        caps.effective_set(["SYS_RESOURCE"], [], False, HOST.available)


def test_status_masks_parse():
    text = "Name:\tx\nCapBnd:\t000001fffeffffff\nCapPrm:\t00000000a80425fb\n"
    assert caps.parse_status_mask(text) == 0x1FFFEFFFFFF
    assert caps.names(caps.parse_status_mask(text, "CapPrm")) == caps.DEFAULT


# --- options at the edge --------------------------------------------------------------------


def test_security_opts():
    assert co.parse_security_opts([]) == co.SecurityOpts()
    s = co.parse_security_opts(
        [
            "seccomp=unconfined",
            "no-new-privileges=false",
            "systempaths=unconfined",
            "apparmor=unconfined",
            "label=disable",
        ]
    )
    assert (s.seccomp, s.no_new_privileges, s.systempaths_unconfined) == ("unconfined", False, True)
    assert co.parse_security_opts(["no-new-privileges"]).no_new_privileges is True
    assert co.parse_security_opts(["seccomp:builtin"]).seccomp == "default"  # the old ":" form
    profile = json.dumps({"defaultAction": "SCMP_ACT_ALLOW"})
    assert co.parse_security_opts([f"seccomp={profile}"]).seccomp == profile


@pytest.mark.parametrize(
    "bad, says",
    [
        (["seccomp=/etc/profile.json"], "profile's JSON"),
        (['seccomp={"defaultAction": 7}'], "invalid seccomp profile"),
        (["no-new-privileges=maybe"], "true or false"),
        (["apparmor=docker-default"], "AppArmor"),
        (["label=type:svirt_t"], "SELinux"),
        (["speed=fast"], "unknown option"),
        (["nonsense"], "KEY=VALUE"),
    ],
)
def test_bad_security_opts(bad, says):
    with pytest.raises(InvalidParameter, match=says):
        co.parse_security_opts(bad)


def test_binds():
    assert co.parse_bind("/srv/data:/data") == co.bind("/srv/data", "/data")
    assert co.parse_bind("/srv//data/:/data:ro,rslave") == co.bind("/srv/data", "/data", True, "rslave")
    for bad, says in (
        ("data:/data", "named volumes"),
        ("/a", "/host/path:/container/path"),
        ("/a:/b:rw,ro", "more than one"),
        ("/a:/b:rshared", "reach the host"),
        ("/a:/b:fast", "invalid mode"),
        ("/a:b", "absolute"),
    ):
        with pytest.raises(InvalidParameter, match=says):
            co.parse_bind(bad)


def test_tmpfs_and_mounts():
    assert co.parse_tmpfs({"/run": "size=64m,exec", "/cache": ""}) == [
        co.tmpfs("/run", ["size=64m", "exec"]),
        co.tmpfs("/cache", []),
    ]
    with pytest.raises(InvalidParameter, match="invalid tmpfs option 'size=lots'"):
        co.parse_tmpfs({"/run": "size=lots"})
    m = co.parse_mount({"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1 << 20, "Mode": 0o700}})
    assert m == co.tmpfs("/t", ["size=1048576", "mode=700"])
    b = co.parse_mount(
        {"Type": "bind", "Source": "/s", "Target": "/t", "ReadOnly": True, "BindOptions": {"NonRecursive": True}}
    )
    assert b == co.bind("/s", "/t", True, "rprivate", recursive=False, create=False)
    with pytest.raises(InvalidParameter, match="named volumes"):
        co.parse_mount({"Type": "volume", "Source": "v", "Target": "/t"})


def test_mount_checks():
    with pytest.raises(InvalidParameter, match="duplicate mount point: /d"):
        co.check_mounts([co.parse_bind("/a:/d"), co.parse_bind("/b:/d")], host_mode=True)
    with pytest.raises(InvalidParameter, match="cannot be /"):
        co.check_mounts([co.parse_bind("/:/")], host_mode=False)
    co.check_mounts([co.parse_bind("/:/")], host_mode=True)  # the host's root, writable
    ordered = co.check_mounts([co.parse_bind("/a:/x/y"), co.parse_bind("/b:/x")], host_mode=True)
    assert [m["target"] for m in ordered] == ["/x", "/x/y"]


def test_devices():
    assert co.parse_device("/dev/fuse") == {"host": "/dev/fuse", "container": "/dev/fuse"}
    assert co.parse_device("/dev/net/tun:/dev/tun0:rwm") == {"host": "/dev/net/tun", "container": "/dev/tun0"}
    assert co.parse_device({"PathOnHost": "/dev/kvm", "PathInContainer": "", "CgroupPermissions": "rw"}) == {
        "host": "/dev/kvm",
        "container": "/dev/kvm",
    }
    with pytest.raises(InvalidParameter, match="device cgroup"):
        co.parse_device("/dev/sda:r")


def test_docker_host_config_reaches_the_request():
    body = {
        "Cmd": ["sh"],
        "HostConfig": {
            "CapAdd": ["NET_ADMIN"],
            "CapDrop": ["MKNOD"],
            "Privileged": False,
            "SecurityOpt": ["no-new-privileges"],
            "Binds": ["/srv:/srv:ro"],
            "Tmpfs": {"/scratch": "size=1m"},
            "ReadonlyRootfs": True,
            "Mounts": [{"Type": "bind", "Source": "/opt", "Target": "/opt"}],
            "Devices": [{"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/fuse", "CgroupPermissions": "rwm"}],
            "MaskedPaths": None,
            "ReadonlyPaths": [],
        },
    }
    req = ContainerCreate.from_docker_json(body)
    assert (req.cap_add, req.cap_drop, req.security_opt, req.read_only) == (
        ["NET_ADMIN"],
        ["MKNOD"],
        ["no-new-privileges"],
        True,
    )
    assert [m["target"] for m in req.mounts] == ["/srv", "/opt", "/scratch"]
    assert req.devices == [{"host": "/dev/fuse", "container": "/dev/fuse"}]
    assert (req.masked_paths, req.readonly_paths) == (None, [])
    shown = confinement_json(
        {
            k: getattr(req, k)
            for k in (
                "cap_add",
                "cap_drop",
                "privileged",
                "security_opt",
                "mounts",
                "read_only",
                "devices",
                "masked_paths",
                "readonly_paths",
            )
        }
    )
    assert shown["Binds"] == ["/srv:/srv:ro"] and shown["Tmpfs"] == {"/scratch": "size=1m"}
    assert shown["Mounts"] == [{"Type": "bind", "Source": "/opt", "Target": "/opt", "ReadOnly": False}]
    assert shown["ReadonlyPaths"] == [] and "/proc/kcore" in shown["MaskedPaths"]


@pytest.mark.parametrize(
    "host, says",
    [
        ({"CapAdd": ["NET_FLY"]}, "CAP_NET_FLY"),
        ({"CapAdd": "NET_ADMIN"}, "CapAdd has the wrong type"),
        ({"SecurityOpt": ["seccomp=nope"]}, "seccomp"),
        ({"Binds": ["/a:/b", "/c:/b"]}, "duplicate mount point"),
        ({"Privileged": "yes"}, "Privileged has the wrong type"),
    ],
)
def test_bad_host_config_is_a_400(host, says):
    with pytest.raises(InvalidParameter, match=says):
        ContainerCreate.from_docker_json({"Cmd": ["sh"], "HostConfig": host})


# --- the plan ------------------------------------------------------------------------------


def _ops(**kw):
    args = dict(
        overlay=None,
        privileged=False,
        read_only=False,
        mounts=[],
        devices=[],
        etc_binds=[("/run/cnm/containers/c/hosts", "/etc/hosts")],
        masked=None,
        readonly=None,
        systempaths_unconfined=False,
        host=HOST,
        kcore=False,
    )
    args.update(kw)
    return confine.filesystem_ops(**args)


def test_host_mode_plan_read_only_host_private_tmp_and_hidden_daemon():
    ops = _ops()
    assert ops[0] == ("setattr", "/", linux.MOUNT_ATTR_RDONLY | linux.MOUNT_ATTR_NODEV, True)
    kinds = [(op[0], op[2] if op[0] in ("mount", "bind") else op[1]) for op in ops]
    assert ("mount", "/tmp") in kinds and ("mount", "/run") in kinds and ("mount", "/var/tmp") in kinds
    assert [p for k, p in kinds if k == "mask"][:3] == ["/var/lib/cnm", "/run/cnm", "/srv/cnm.sock"]
    assert ("mask", "/proc/kcore") in kinds and ("ro", "/proc/sys") in kinds
    # the six device nodes are binds of the host's into a nodev tmpfs
    dev = next(op for op in ops if op[0] == "mount" and op[2] == "/dev")
    assert dev[4] & linux.MS_NODEV
    assert sorted(op[2] for op in ops if op[0] == "bind" and op[2].startswith("/dev/")) == [
        "/dev/full",
        "/dev/null",
        "/dev/random",
        "/dev/tty",
        "/dev/urandom",
        "/dev/zero",
    ]
    assert ("bind", "/run/cnm/containers/c/hosts", "/etc/hosts", "file", False, False, 0, True) in ops


def test_host_mode_writable_root_and_user_tmpfs_replaces_the_private_one():
    ops = _ops(mounts=[co.parse_bind("/:/"), *co.parse_tmpfs({"/tmp": "size=8m"})])
    assert ops[0] == ("setattr", "/", linux.MOUNT_ATTR_NODEV, True)
    tmp = [op for op in ops if op[0] == "mount" and op[2] == "/tmp"]
    assert len(tmp) == 1 and tmp[0][5] == "size=8m" and tmp[0][4] & linux.MS_NOEXEC  # Docker's tmpfs defaults


def test_rootfs_plan_overlay_first_and_read_only_last():
    ops = _ops(overlay=(["/img"], "/c/upper", "/c/work"), read_only=True, workdir="/app")
    assert ops[0][:5] == ("mount", "overlay", "/", "overlay", linux.MS_NODEV)
    assert "lowerdir=/img,upperdir=/c/upper,workdir=/c/work" == ops[0][5]
    assert ops[-2:] == [("dir", "/app"), ("remount_ro", "/")]
    assert not any(op[0] == "setattr" and op[1] == "/" for op in ops)
    assert not any(op[0] == "mask" and op[1] == "/run/cnm" for op in ops)  # the host is out of sight anyway


def test_rootfs_plan_with_many_layers_mounts_from_their_directory():
    lowers = [f"/var/lib/cnm-lab/lab/host/root/images/l/{i:012x}" for i in range(125)]
    ops = _ops(overlay=(lowers, "/c/upper", "/c/work"))
    assert ops[0] == ("chdir", "/var/lib/cnm-lab/lab/host/root/images/l")
    assert ops[1][5].startswith("lowerdir=000000000000:") and len(ops[1][5]) < 4096


def test_privileged_plan_has_host_devices_and_no_masks():
    devs = [("/dev/sda", 0o60660, 0x800, 0, 6)]
    ops = _ops(privileged=True, host_devs=devs)
    assert ("mknod", "/dev/sda", 0o60660, 0x800, 0, 6) in ops
    assert not any(op[0] in ("mask", "ro") and op[1].startswith("/proc") for op in ops)
    assert ops[0] == ("setattr", "/", linux.MOUNT_ATTR_RDONLY, True)
    assert not any(op[0] == "setattr" and op[1] == "/sys" for op in ops)


def test_plan_for_a_default_spec():
    spec = ContainerSpec(id="c", argv=["true"]).validate()
    p = confine.plan(spec, [], HOST)
    assert p["caps"] == 0xA80425FB and p["nnp"] is True and p["root"] is None
    assert isinstance(p["seccomp"], bytes) and len(p["seccomp"]) % 8 == 0
    priv = confine.plan(ContainerSpec(id="c", argv=["true"], privileged=True), [], HOST)
    assert priv["seccomp"] is None and priv["nnp"] is False and priv["caps"] == caps.mask(HOST.available)
    unconfined = confine.plan(ContainerSpec(id="c", argv=["true"], security_opt=["seccomp=unconfined"]), [], HOST)
    assert unconfined["seccomp"] is None and unconfined["nnp"] is True
    assert confine.plan(spec, [], HOST)["seccomp"] is p["seccomp"]  # compiled once, cached
    assert set(confine.lock_plan(p)) == {"caps", "last_cap", "nnp", "seccomp", "seccomp_flags"}


def test_spec_validates_confinement():
    with pytest.raises(InvalidParameter, match="CAP_WARP"):
        ContainerSpec(id="c", argv=["true"], cap_add=["WARP"]).validate()
    with pytest.raises(InvalidParameter, match="cannot be /"):
        ContainerSpec(id="c", argv=["true"], rootfs=["/img"], mounts=[co.parse_bind("/:/")]).validate()
    spec = ContainerSpec(id="c", argv=["true"], cap_add=["NET_ADMIN"], mounts=[co.parse_bind("/a:/b:ro")])
    assert ContainerSpec.from_json(spec.to_json()) == spec
