#!/usr/bin/env bash
# A self-signed CA and one certificate + key signed by it, for a TLS Dask cluster:
#   cluster/tls.sh DIR [HOST...]     writes DIR/ca.pem, DIR/cert.pem, DIR/key.pem
# The scheduler, the workers and the client can share the certificate (Dask checks that the
# peer's certificate is signed by the CA). HOSTs (default: localhost 127.0.0.1) go in its
# subjectAltName. Keep DIR private: key.pem lets anyone join the cluster.
set -euo pipefail
dir=${1:?usage: cluster/tls.sh DIR [HOST...]}
shift
hosts=("${@:-localhost}")
[ $# -eq 0 ] && hosts=(localhost 127.0.0.1)
mkdir -p "$dir"
umask 077
san=""
for h in "${hosts[@]}"; do
  if [[ $h =~ ^[0-9.]+$ ]]; then san+="IP:$h,"; else san+="DNS:$h,"; fi
done
san=${san%,}
openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=cenlib dask CA" \
  -keyout "$dir/ca-key.pem" -out "$dir/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=cenlib dask" \
  -keyout "$dir/key.pem" -out "$dir/cert.csr" 2>/dev/null
openssl x509 -req -in "$dir/cert.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" \
  -CAcreateserial -days 365 -out "$dir/cert.pem" \
  -extfile <(printf "subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n" "$san") 2>/dev/null
rm -f "$dir/cert.csr" "$dir/ca.srl"
echo "$dir: ca.pem cert.pem key.pem (subjectAltName $san)"
