// SPDX-License-Identifier: GPL-2.0-only
//! Enclave table scripts: the text format of `seng save` / `seng restore` and of the simulator's
//! enclave event files.
