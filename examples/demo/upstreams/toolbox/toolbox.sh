#!/opt/toolbox/bin/busybox sh
echo "toolbox on $(/opt/toolbox/bin/busybox uname -m): $(/opt/toolbox/bin/busybox --list | /opt/toolbox/bin/busybox wc -l) tools"
