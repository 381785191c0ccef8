#!/usr/bin/env python3
"""Data-parallel MSN pretraining speed: the default model's config (configs/fashion_mnist_msn.json, no probes)
for a few steps per launch, modes interleaved round by round so that the shared machine's noise hits all alike.

  local:  1 process x 2 threads, against 2 ranks x 1 thread under mpirun on this machine;
  netns:  2 ranks in two network namespaces joined by a veth pair shaped by tc netem (rate and delay), mpirun
          over TCP between them (its rsh agent is `ip netns exec`), so traffic never leaves the namespaces.

Reports images/s (median over the steps after the first), the step time, the gradient all-reduce time per
step and the part of it the backward hid. Standard library only; needs root for the namespaces.
Usage: scripts/bench_mpi.py [--bin .build/release/vitmsn] [--steps 12] [--rounds 3] [--netns 1gbit:0.5ms ...]
"""
import argparse, csv, json, os, re, statistics, subprocess, sys, tempfile

ROOT_OK = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
NAMESPACES = ("vitmsn-a", "vitmsn-b")
ADDRESSES = ("10.77.0.1", "10.77.0.2")


def sh(*command, check=True):
    return subprocess.run(command, check=check, capture_output=True, text=True)


def netns_up(rate, delay):
    netns_down()
    for ns in NAMESPACES:
        sh("ip", "netns", "add", ns)
    sh("ip", "link", "add", "vitmsn-va", "type", "veth", "peer", "name", "vitmsn-vb")
    for ns, device, address in zip(NAMESPACES, ("vitmsn-va", "vitmsn-vb"), ADDRESSES):
        sh("ip", "link", "set", device, "netns", ns)
        sh("ip", "-n", ns, "addr", "add", address + "/24", "dev", device)
        sh("ip", "-n", ns, "link", "set", device, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        netem = sh("tc", "-n", ns, "qdisc", "add", "dev", device, "root", "netem", "rate", rate, "delay", delay, check=False)
        if netem.returncode != 0:  # a kernel without sch_netem: shape the rate alone with a token bucket
            sh("tc", "-n", ns, "qdisc", "add", "dev", device, "root", "tbf", "rate", rate, "burst", "256kb", "latency", "50ms")
            print(f"  {ns}: netem unavailable ({netem.stderr.strip()}); rate {rate} by tbf, no added delay", flush=True)


def netns_down():
    for ns in NAMESPACES:
        sh("ip", "netns", "del", ns, check=False)


def launch(mode, binary, config, steps, work, timeout):
    """Runs one pretraining launch; returns (images/s per step, seconds per step, all-reduce line)."""
    output = os.path.join(work, mode.replace(" ", "_"))
    subprocess.run(["rm", "-rf", output])
    settings = json.load(open(config))
    settings["meta"]["output_dir"] = output
    settings["optimization"]["probe_every"] = 0
    path = output + ".json"
    json.dump(settings, open(path, "w"))
    args = [binary, "pretrain", "--config", path, "--stop-after-step", str(steps)]
    env = dict(os.environ, **ROOT_OK)
    if mode == "1 process x 2 threads":
        command = args + ["--threads", "2"]
    elif mode == "2 ranks x 1 thread":
        command = ["mpirun", "--oversubscribe", "-np", "2", "--bind-to", "core"] + args + ["--threads", "1"]
    else:  # across the namespaces
        agent = os.path.join(work, "netns-agent")
        with open(agent, "w") as f:  # mpirun's rsh agent: `agent [options] HOST COMMAND...` → run it in HOST's namespace
            f.write('#!/bin/sh\nwhile [ "${1#-}" != "$1" ]; do shift; done\nhost=$1; shift\n'
                    f'case $host in {ADDRESSES[1]}) ns={NAMESPACES[1]};; *) ns={NAMESPACES[0]};; esac\n'
                    'exec ip netns exec "$ns" sh -c "$*"\n')
        os.chmod(agent, 0o755)
        command = ["ip", "netns", "exec", NAMESPACES[0], "mpirun", "-np", "2", "--host", f"{ADDRESSES[0]}:1,{ADDRESSES[1]}:1",
                   "--mca", "plm_rsh_agent", agent, "--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", "10.77.0.0/24",
                   "--mca", "oob_tcp_if_include", "10.77.0.0/24", "--bind-to", "none"] + args + ["--threads", "1"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        sys.exit(f"{mode}: exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    rows = list(csv.DictReader(open(os.path.join(output, "log.csv"))))[1:]  # the first step warms up
    speeds = [float(r["images_per_second"]) for r in rows]
    reduce_line = next((l for l in result.stdout.splitlines() if "all-reduced" in l), "")
    return speeds, reduce_line


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", default=".build/release/vitmsn")
    parser.add_argument("--config", default="configs/fashion_mnist_msn.json")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--netns", action="append", default=[], help="RATE:DELAY of the veth link, e.g. 1gbit:0.5ms")
    parser.add_argument("--skip-local", action="store_true")
    parser.add_argument("--timeout", type=float, default=900)
    a = parser.parse_args()
    binary = os.path.abspath(a.bin)
    modes = ([] if a.skip_local else ["1 process x 2 threads", "2 ranks x 1 thread"]) + [f"netns {n}" for n in a.netns]
    speeds = {m: [] for m in modes}
    reductions = {m: [0.0, 0.0, 0] for m in modes}  # seconds all-reducing, seconds not hidden, steps
    with tempfile.TemporaryDirectory() as work:
        try:
            for round in range(a.rounds):
                for mode in modes:
                    if mode.startswith("netns"):
                        netns_up(*mode.split()[1].split(":"))
                    s, line = launch(mode, binary, a.config, a.steps, work, a.timeout)
                    speeds[mode].append(statistics.median(s))
                    if reduce := re.search(r"([\d.]+) s in all, ([\d.]+) s of it", line):
                        r = reductions[mode]
                        r[0], r[1], r[2] = r[0] + float(reduce[1]), r[1] + float(reduce[2]), r[2] + a.steps
                    print(f"round {round + 1}: {mode}: {statistics.median(s):.1f} images/s  {line}", flush=True)
        finally:
            netns_down()
    base = modes[0]
    print(f"\nmedian over {a.rounds} interleaved rounds ({a.steps} steps each, the first dropped):")
    for mode in modes:
        m = statistics.median(speeds[mode])
        batch = json.load(open(a.config))["criterion"]["batch_size"]
        total, exposed, steps = reductions[mode]
        extra = ""
        if steps:
            extra = f"; all-reduce {1000 * total / steps:.1f} ms/step, {1000 * exposed / steps:.1f} not hidden ({100 * (1 - exposed / total):.0f} % hidden)"
        print(f"  {mode:28s} {m:7.1f} images/s ({1000 * batch / m:6.0f} ms/step) = {m / statistics.median(speeds[base]):.2f}x {base}{extra}")


if __name__ == "__main__":
    main()
