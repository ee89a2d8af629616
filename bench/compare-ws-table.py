#!/usr/bin/env python3
"""The tables of bench/compare-ws.sh from its results/ws-<stamp>.jsonl (one or more files)."""
import collections
import json
import re
import sys

rows = [json.loads(l) for f in sys.argv[1:] for l in open(f) if l.startswith("{")]
ops = collections.OrderedDict()
mem = collections.OrderedDict()
for r in rows:
    key = re.sub(r"-\d+$", "", r["label"])
    if r["mode"] == "idle":
        mem.setdefault(key, {})[r["server"]] = r


def good(x):
    """A run that counts: every request answered 200, none lost, the client's pace kept (≥ 95 %
    of the target rate sent and completed)."""
    return (x.get("server_us_per_op") and x.get("bad", 1) == 0 and x.get("lost", 1) == 0 and x.get("errors", 1) == 0
            and x.get("ok") == x.get("sent") and x.get("rate_per_s", 0) >= 0.95 * x.get("target_rate", 0))


for r in rows:
    if r["mode"] == "requests":
        ops.setdefault(re.sub(r"-\d+$", "", r["label"]), {}).setdefault(r["server"], []).append(r)
if ops:
    print("\nServer CPU per request, µs (runs; * = a run that failed a request or missed the pace, left out of the mean)\n")
    print("| test | Kamailio µs/op | ser µs/op | ratio of means ser/Kamailio | sent/s, completed/s K / ser | answered of sent K / ser | lost, non-200 K / ser | latency p50/p99 ms K / ser | server CPU % K / ser | log errors (queue full) K / ser |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for k, v in ops.items():
        K, S = v.get("kamailio", []), v.get("ser", [])
        f = lambda xs: " / ".join((f"{x['server_us_per_op']:.0f}" if x.get("server_us_per_op") else "-") + ("" if good(x) else "*") for x in xs)

        def mean(xs):
            v = [x["server_us_per_op"] for x in xs if good(x)]
            return sum(v) / len(v) if v else None

        g = lambda xs, c: ", ".join(str(x.get(c, "-")) for x in xs)
        rates = lambda xs: ", ".join(f"{x.get('sent_rate_per_s')}/{x.get('rate_per_s')}" for x in xs)
        of = lambda xs: ", ".join(f"{x.get('ok')} of {x.get('sent')}" for x in xs)
        lb = lambda xs: ", ".join(f"{x.get('lost')},{x.get('bad')}" for x in xs)
        lat = lambda xs: ", ".join(f"{x.get('lat_ms_p50', 0):.1f}/{x.get('lat_ms_p99', 0):.1f}" for x in xs)
        le = lambda xs: ", ".join(f"{x.get('server_log_errors')}({x.get('server_queue_full_lines')})" for x in xs)
        mk, ms = mean(K), mean(S)
        ratio = f"**{ms / mk:.2f}**" if mk and ms else "-"
        print(f"| {k} | {f(K)} | {f(S)} | {ratio} | {rates(K)} / {rates(S)} | {of(K)} / {of(S)} | {lb(K)} / {lb(S)} | {lat(K)} / {lat(S)} | "
              f"{g(K, 'server_cpu_pct')} / {g(S, 'server_cpu_pct')} | {le(K)} / {le(S)} |")
if mem:
    print("\n| test | Kamailio PSS before → open (MB) | per conn | ser PSS before → open (MB) | per conn | ser RSS per conn | ratio | open K / ser | errors K / ser | idle CPU % K / ser | PSS after close K / ser (MB) | log errors K / ser |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for k, v in mem.items():
        K, S = v.get("kamailio"), v.get("ser")
        if not K or not S:
            continue
        mb = lambda x: x / 1024
        print(f"| {k} | {mb(K['mem_before']['pss_kb']):.1f} → {mb(K['mem_open']['pss_kb']):.1f} | {K['pss_bytes_per_conn']} B | "
              f"{mb(S['mem_before']['pss_kb']):.1f} → {mb(S['mem_open']['pss_kb']):.1f} | {S['pss_bytes_per_conn']} B | {S['rss_bytes_per_conn']} B | "
              f"**{S['pss_bytes_per_conn'] / K['pss_bytes_per_conn']:.2f}** | {K['open']} / {S['open']} | {K['errors']} / {S['errors']} | "
              f"{K['idle_cpu_pct']} / {S['idle_cpu_pct']} | "
              f"{mb(K['mem_after_close']['pss_kb']):.1f} / {mb(S['mem_after_close']['pss_kb']):.1f} | "
              f"{K.get('server_log_errors')} / {S.get('server_log_errors')} |")
