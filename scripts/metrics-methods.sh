#!/bin/sh
# RSS and /metrics size of a romanad (argument: its binary) before and after 500 requests with
# 64 KiB invented method names to /healthz (docs/security.md, "Resource exhaustion"). 127.0.0.1 only.
BIN=$1; D=$(mktemp -d); $BIN --data-dir $D --auth off --listen 127.0.0.1:0 > $D/out 2>/dev/null & P=$!
sleep 2; URL=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' $D/out)
echo "rss_before_kb $(awk '/VmRSS/{print $2}' /proc/$P/status)"
M=$(head -c 65536 /dev/zero | tr '\0' 'M')
i=0; while [ $i -lt 500 ]; do curl -s -o /dev/null -X "X$i$M" $URL/healthz; i=$((i+1)); done
echo "rss_after_kb $(awk '/VmRSS/{print $2}' /proc/$P/status)"
echo "metrics_bytes $(curl -s $URL/metrics | wc -c) series $(curl -s $URL/metrics | grep -c '^romana_http_requests_total{')"
kill $P; rm -rf $D
