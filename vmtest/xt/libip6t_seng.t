# SPDX-License-Identifier: GPL-2.0-only
# -m seng with ip6tables (IPv6): host conditions of the IPv6 family, and the original's
# sample rules carried over to an IPv6 enclave subnet.
:INPUT
-i tunFA --source fd00:28::/64 -p tcp --destination-port 8391 -m seng --src-app d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0 -j ACCEPT;-s fd00:28::/64 -i tunFA -p tcp -m tcp --dport 8391 -m seng --src-app d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0 -j ACCEPT;OK
-i tunFA --source fd00:28::/64 -m seng ! --src-host 2001:db8::/56 -j DROP;-s fd00:28::/64 -i tunFA -m seng ! --src-host 2001:db8::/56 -j DROP;OK
:INPUT,FORWARD,OUTPUT
-m seng --src-host 2001:db8::/32;=;OK
-m seng ! --dst-host 2001:db8::1/64;-m seng ! --dst-host 2001:db8::/64;OK
-m seng --src-host 2001:db8::1;-m seng --src-host 2001:db8::1/128;OK
-m seng --src-host ::ffff:10.0.0.0/122;=;OK
-m seng --dst-host 2001:db8::/ffff:ffff::;-m seng --dst-host 2001:db8::/32;OK
-m seng --src-host ::/0 ! --dst-host fe80::/10;=;OK
-m seng --src-host 2001:db8::/129;;FAIL
-m seng --src-host 10.0.0.1;;FAIL
-m seng --dst-host 2001:db8::g;;FAIL
-m seng --dst-host 2001:db8::/ffff:ffff:;;FAIL
