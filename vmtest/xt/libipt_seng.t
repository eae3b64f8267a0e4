# SPDX-License-Identifier: GPL-2.0-only
# -m seng with iptables (IPv4): the original documentation's four sample rules verbatim, and
# IPv4 host conditions. Format of iptables' extension tests: rule;saved form or =;OK|FAIL.
:INPUT
-i tunFA --source 192.168.28.0/24 -p tcp --destination-port 8391 -m seng --src-app d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0 -j ACCEPT;-s 192.168.28.0/24 -i tunFA -p tcp -m tcp --dport 8391 -m seng --src-app d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0 -j ACCEPT;OK
-i tunFA --source 192.168.28.0/24 -m seng ! --src-host 10.0.0.0/26 -j DROP;-s 192.168.28.0/24 -i tunFA -m seng ! --src-host 10.0.0.0/26 -j DROP;OK
-i tunFA --source 192.168.28.0/24 -p tcp --destination-port 443 -m seng --src-cat Browser -j ACCEPT;-s 192.168.28.0/24 -i tunFA -p tcp -m tcp --dport 443 -m seng --src-cat Browser -j ACCEPT;OK
:OUTPUT
-o tunFA --destination 192.168.28.0/24 -p tcp --destination-port 4711 -m seng --dst-app d5876e37d31ad62d4eafd36997820b18fdea7b104a0e2d3f81873230be2af792 -j ACCEPT;-d 192.168.28.0/24 -o tunFA -p tcp -m tcp --dport 4711 -m seng --dst-app d5876e37d31ad62d4eafd36997820b18fdea7b104a0e2d3f81873230be2af792 -j ACCEPT;OK
:INPUT,FORWARD,OUTPUT
-m seng --src-host 10.0.0.0/26;=;OK
-m seng ! --src-host 10.0.0.5/26;-m seng ! --src-host 10.0.0.0/26;OK
-m seng --dst-host 10.0.0.7;-m seng --dst-host 10.0.0.7/32;OK
-m seng ! --dst-host 10.1.2.3/255.255.0.0;-m seng ! --dst-host 10.1.0.0/16;OK
-m seng --src-host 10.1.2.3/255.0.255.0;-m seng --src-host 10.0.2.0/255.0.255.0;OK
-m seng --src-host 0.0.0.0/0 --dst-host 192.168.28.0/24;=;OK
-m seng --src-cat Browser ! --src-host 10.0.0.0/26 --dst-app d5876e37d31ad62d4eafd36997820b18fdea7b104a0e2d3f81873230be2af792;=;OK
-m seng --src-host 10.0.0.0/33;;FAIL
-m seng --src-host 10.0.0;;FAIL
-m seng --src-host 10.0.0.1/;;FAIL
-m seng --src-host 10.0.0.1/255.0.255;;FAIL
-m seng --dst-host 2001:db8::1;;FAIL
-m seng --dst-host gateway.example;;FAIL
-m seng --src-host 10.0.0.0/24 ! --src-host 10.0.1.0/24;;FAIL
