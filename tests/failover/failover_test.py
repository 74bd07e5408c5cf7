#!/usr/bin/env python3
"""Failover behind nginx: 3 `tandem serve` replicas + nginx (deploy/nginx/run_local.sh), N greedy edges
(`tandem edge`, draft llama2xs_tinystories_279K, target stories260K) generating through nginx; the replica
serving the most edges is SIGKILLed mid-generation. Passes when every edge's final text equals the target-only
greedy text (`tandem generate --temp 0`, the oracle), every token is verified, the killed replica's route keys
moved to one other replica while the others never moved (sticky routing), and it reports the time to recover,
the tokens re-verified and the tokens lost (0).

Exit status 77 (ctest: SKIPPED) when nginx is not installed. Usage: failover_test.py TANDEM_BIN SOURCE_DIR"""
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

EDGES = 6
N_TOKENS = 180  # the draft's context is 256 tokens
DELAY_MS = 20  # one-way, emulated on each edge's link: makes generation last a few seconds
PROMPTS = ["Once upon a time", "Tom and his dog went to the park", "The little girl saw", "One day, a big bird",
           "Lily wanted to play", "The sun was"]


def fail(msg):
    print("FAILED: " + msg, flush=True)
    sys.exit(1)


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def access_log(path):
    """[(time, route, upstream, status, grpc, uri)] from the log_format 'tandem' lines."""
    rows = []
    for line in read(path).splitlines():
        m = re.match(r"(\S+) route=(\S*) upstream=(\S*) status=(\d+) grpc=(\S*) hgrpc=(\S*) uri=(\S*)", line)
        if m:  # the gRPC status is in the trailers, or in the headers of a trailers-only reply; "-" = none
            grpc = m[5] if m[5] != "-" else m[6]
            rows.append((float(m[1]), m[2], m[3], int(m[4]), grpc, m[7]))
    return rows


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    tandem, src = sys.argv[1], sys.argv[2]
    if not (shutil.which("nginx") or os.path.exists("/usr/sbin/nginx")):
        print("SKIPPED: nginx is not installed (tools/install_deps.sh installs nginx-light)")
        return 77
    models = os.path.join(src, "models")
    target = os.path.join(models, "stories260K.gguf")
    draft = os.path.join(models, "llama2xs_tinystories_279K.gguf")
    work = tempfile.mkdtemp(prefix="tandem-failover.")
    token = "%032x" % random.getrandbits(128)
    env = dict(os.environ, TANDEM_TOKEN=token)

    # The oracle first (while the machine is quiet): target-only greedy text per prompt.
    want = []
    for p in PROMPTS:
        r = subprocess.run([tandem, "generate", "-m", target, "-p", p, "-n", str(N_TOKENS), "--temp", "0",
                            "--ignore-eos", "--no-timings"], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            fail("tandem generate: " + r.stderr)
        want.append(r.stdout.strip())

    lb = subprocess.Popen([os.path.join(src, "deploy/nginx/run_local.sh"), "--tandem", tandem, "--replicas", "3",
                           "--dir", work, "--", "-m", target], env=env, stdout=subprocess.DEVNULL,
                          stderr=open(os.path.join(work, "run_local.log"), "w"), start_new_session=True)
    edges = []
    try:
        state_path = os.path.join(work, "state")
        for _ in range(600):
            if os.path.exists(state_path) or lb.poll() is not None:
                break
            time.sleep(0.1)
        if not os.path.exists(state_path):
            fail("run_local.sh did not come up:\n" + read(os.path.join(work, "run_local.log")))
        state = dict(re.findall(r'^(\w+)="?([^"\n]*)"?$', read(state_path), re.M))
        ports = state["REPLICA_PORTS"].split()
        pids = [int(p) for p in state["REPLICA_PIDS"].split()]
        lb_addr = "127.0.0.1:" + state["LB_PORT"]
        print(f"nginx on {lb_addr}, replicas on {ports}", flush=True)

        keys = ["%016x" % random.getrandbits(64) for _ in range(EDGES)]
        for i, (key, prompt) in enumerate(zip(keys, PROMPTS)):
            out = open(os.path.join(work, f"edge{i}.out"), "w")
            err = open(os.path.join(work, f"edge{i}.err"), "w")
            edges.append(subprocess.Popen(
                [tandem, "edge", "-m", draft, "--server", lb_addr, "--route-key", key, "-p", prompt, "-n",
                 str(N_TOKENS), "--ignore-eos", "--no-stream", "--delay-ms", str(DELAY_MS), "--timeout-ms", "5000",
                 "--retry-ms", "5"],
                env=env, stdout=out, stderr=err))

        # Which replica holds which edge: the OpenSession lines of the access log.
        log_path = os.path.join(work, "access.log")
        home = {}
        deadline = time.time() + 30
        while len(home) < EDGES and time.time() < deadline:
            for t, route, up, status, grpc, uri in access_log(log_path):
                if uri.endswith("/OpenSession") and grpc == "0" and route in keys:
                    home.setdefault(route, up)
            time.sleep(0.05)
        if len(home) < EDGES:
            fail(f"only {len(home)} of {EDGES} edges opened a session through nginx")
        counts = {}
        for up in home.values():
            counts[up] = counts.get(up, 0) + 1
        victim = max(counts, key=lambda u: counts[u])
        victim_pid = pids[ports.index(victim.rsplit(":", 1)[1])]
        affected = sorted(k for k, up in home.items() if up == victim)
        # Mid-generation: a third into a ~3-4 s run. While the edge is cut off it drafts alone (fast, unverified);
        # --retry-ms 5 keeps that short, so the edges cannot reach N_TOKENS before they are back.
        time.sleep(0.8)
        running = sum(e.poll() is None for e in edges)
        if running < EDGES:
            fail(f"only {running} of {EDGES} edges still running at the kill: the generation is too short")
        t_kill = time.time()
        os.kill(victim_pid, signal.SIGKILL)
        print(f"killed replica {victim} (pid {victim_pid}) serving {len(affected)} of {EDGES} edges", flush=True)

        for e in edges:
            try:
                e.wait(timeout=90)
            except subprocess.TimeoutExpired:
                fail("an edge did not finish within 90 s")
        rows = access_log(log_path)
    finally:
        for e in edges:
            if e.poll() is None:
                e.kill()
        if lb.poll() is None:
            os.killpg(lb.pid, signal.SIGTERM)  # run_local.sh stops nginx and the replicas
            try:
                lb.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(lb.pid, signal.SIGKILL)

    ok = True
    reverified = retracted_all = 0
    recover = []
    for i, key in enumerate(keys):
        out = read(os.path.join(work, f"edge{i}.out")).strip()
        err = read(os.path.join(work, f"edge{i}.err"))
        st = re.search(r"(\d+) verified, (\d+) unverified.*?(\d+) outages, (\d+) reconnects, (\d+) retracted", err)
        if edges[i].returncode != 0 or not st:
            print(f"edge {i}: exit {edges[i].returncode}\n{err}")
            ok = False
            continue
        verified, unverified, outages, reconnects, retracted = map(int, st.groups())
        rever = sum(int(n) for n in re.findall(r"(\d+) unverified tokens re-verified", err))
        reverified += rever
        retracted_all += retracted
        # After the kill, this key's calls: all on one replica; the victim's keys on another one.
        after = [(t, up) for t, route, up, status, grpc, uri in rows if route == key and t > t_kill]
        ups = {up for t, up in after if up and up != victim and "," not in up}
        moved = key in affected
        same = out == want[i]
        print(f"edge {i} key {key}: {'moved' if moved else 'stayed'} {home[key]}"
              f"{' -> ' + ','.join(sorted(ups)) if moved else ''}; text {'==' if same else '!='} target greedy; "
              f"{verified} verified, {unverified} unverified, {outages} outages, {rever} re-verified, "
              f"{retracted} retracted")
        if not same:
            n = next((j for j, (a, b) in enumerate(zip(out, want[i])) if a != b), min(len(out), len(want[i])))
            print(f"  first difference at character {n}:\n  edge:   {out[max(0, n - 40):n + 40]!r}\n"
                  f"  target: {want[i][max(0, n - 40):n + 40]!r}")
            ok = False
        if unverified:
            ok = False
        before_ups = {up for t, route, up, status, grpc, uri in rows if route == key and t <= t_kill and up}
        if before_ups - {home[key]}:
            print(f"  not sticky before the kill: {sorted(before_ups)}")
            ok = False
        if moved:
            opens = [t for t, route, up, status, grpc, uri in rows
                     if route == key and t > t_kill and uri.endswith("/OpenSession") and grpc == "0" and up != victim]
            if len(ups) != 1 or not opens:
                print(f"  expected the session reopened on exactly one other replica, saw {sorted(ups)}")
                ok = False
            else:
                recover.append(opens[0] - t_kill)
        elif ups - {home[key]}:
            print(f"  moved although its replica lived: {sorted(ups)}")
            ok = False
    print(f"failover: {len(affected)} edges moved; time to recover (kill -> session reopened on another replica): "
          f"max {max(recover) if recover else float('nan'):.3f} s, mean "
          f"{sum(recover) / len(recover) if recover else float('nan'):.3f} s; tokens drafted offline and re-verified "
          f"{reverified} ({reverified - retracted_all} confirmed, {retracted_all} replaced by the target's); "
          f"tokens lost {0 if ok else 'see above'}", flush=True)
    if not ok:
        print("logs kept in " + work)
        return 1
    shutil.rmtree(work, ignore_errors=True)
    print("PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
