#!/opt/hello/bin/busybox sh
# hello @VERSION@: says which machine its runtime was built for.
echo "hello @VERSION@ on $(/opt/hello/bin/busybox uname -m)"
