#!/usr/bin/env bash
# Makes a throw-away certificate authority and the certificates the TLS
# tests and the local TLS stack use, with openssl, into DIR:
#   ca.pem                       the CA that signs everything below
#   server.pem server.key        CN=localhost, SAN DNS:localhost, IP:127.0.0.1 (todo-command, todo-query)
#   saga.pem saga.key            a client certificate, SAN DNS:todo-saga (a service identity)
#   operator.pem operator.key    a client certificate, SAN DNS:todoctl
#   other-ca.pem                 a second CA nobody trusts
#   rogue.pem rogue.key          a client certificate signed by other-ca, SAN DNS:todo-saga
#   jwt-es256.key jwt-es256.pub  an identity provider's P-256 key pair: it signs user tokens (ES256),
#                                the services verify with the public half (TODO_JWT_PUBLIC_KEYS)
#   jwt-rs256.key jwt-rs256.pub  the same with RSA 2048 (RS256)
# Keys are ECDSA P-256 unless said; everything is valid for 30 days. Never use them
# outside tests and the local stack.
# Usage: scripts/make-certs.sh DIR
set -euo pipefail
dir=${1:?usage: make-certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ca() { # name
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -subj "/CN=todo test $1" -days 30 -out "$1.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}
leaf() { # name, ca, cn, san, usage
  key "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$3" -out "$1.csr" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=%s\nbasicConstraints=CA:FALSE\n' "$4" "$5" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -days 30 -extfile "$1.ext" \
    -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
ca ca
ca other-ca
leaf server ca localhost "DNS:localhost,IP:127.0.0.1" serverAuth
leaf saga ca todo-saga "DNS:todo-saga" clientAuth
leaf operator ca todoctl "DNS:todoctl" clientAuth
leaf rogue other-ca todo-saga "DNS:todo-saga" clientAuth
key jwt-es256.key
openssl pkey -in jwt-es256.key -pubout -out jwt-es256.pub 2>/dev/null
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out jwt-rs256.key 2>/dev/null
openssl pkey -in jwt-rs256.key -pubout -out jwt-rs256.pub 2>/dev/null
chmod 600 ./*.key
echo "certificates in $dir"
