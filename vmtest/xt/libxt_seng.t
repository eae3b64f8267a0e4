# SPDX-License-Identifier: GPL-2.0-only
# -m seng options common to iptables and ip6tables: application measurements, categories,
# negation, canonical order, two seng matches in one rule, and the rejected forms.
:INPUT,FORWARD,OUTPUT
-m seng --src-app d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0;=;OK
-m seng ! --src-app d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0;=;OK
-m seng --src-app D9237809AB399AA541E42AD54146A2A1BDE310DD7DC9FCCC1E964DACF4C5C3B0;-m seng --src-app d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0;OK
-m seng --dst-app d5876e37d31ad62d4eafd36997820b18fdea7b104a0e2d3f81873230be2af792;=;OK
-m seng ! --dst-app d5876e37d31ad62d4eafd36997820b18fdea7b104a0e2d3f81873230be2af792;=;OK
-m seng --src-cat Browser;=;OK
-m seng ! --src-cat Browser;=;OK
-m seng --dst-cat 12345678901234567890;=;OK
-m seng ! --dst-cat Mail;=;OK
-m seng --src-cat web-2_0;=;OK
-m seng --src-cat "My App";=;OK
-m seng --dst-cat 'say "hi"';-m seng --dst-cat "say \"hi\"";OK
-m seng --dst-cat Mail ! --dst-app d5876e37d31ad62d4eafd36997820b18fdea7b104a0e2d3f81873230be2af792 --src-cat Browser ! --src-app d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0;-m seng ! --src-app d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0 --src-cat Browser ! --dst-app d5876e37d31ad62d4eafd36997820b18fdea7b104a0e2d3f81873230be2af792 --dst-cat Mail;OK
-m seng --src-cat a -m seng ! --dst-cat b;=;OK
-m seng --src-app abc;;FAIL
-m seng --src-app d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b;;FAIL
-m seng --src-app d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b00;;FAIL
-m seng --src-app d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3bg;;FAIL
-m seng --dst-app d5876e37d31ad62d4eafd36997820b18fdea7b104a0e2d3f81873230be2af79é;;FAIL
-m seng --src-cat 123456789012345678901;;FAIL
-m seng --src-cat "";;FAIL
-m seng --src-cat a --src-cat b;;FAIL
-m seng --dst-app d5876e37d31ad62d4eafd36997820b18fdea7b104a0e2d3f81873230be2af792 ! --dst-app d5876e37d31ad62d4eafd36997820b18fdea7b104a0e2d3f81873230be2af792;;FAIL
-m seng;;FAIL
-m seng -j ACCEPT;;FAIL
-m seng --src-app;;FAIL
-m seng --src-ip 10.0.0.1;;FAIL
