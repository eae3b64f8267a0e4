// SPDX-License-Identifier: GPL-2.0-only
//! Framing between the typed API and the bytes on the socket.
//!
//! The seng requests themselves are written by [`seng_core::operation::Operation::emit`] and the
//! encoders of [`seng_core::genl`], beside the decoders the kernel module runs, so there is one
//! description of the protocol. This module only adds what surrounds them: the netlink and
//! generic netlink headers (through `netlink-packet-core` / `netlink-packet-generic`), packing
//! many ENCLAVE nests into one message, and decoding acks, extended acks and replies.

use std::net::IpAddr;

use netlink_packet_core::{
    Emitable, ErrorBuffer, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK_TLVS,
    NLM_F_CAPPED, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN,
};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlFamily, GenlMessage};
use seng_core::genl::{attr, parse_entry, Attrs, AttrWriter, NoRoom, FAMILY_VERSION};
use seng_core::operation::Registration;
use seng_core::Origin;

use crate::stats::Stats;
use crate::error::{Error, KernelError};

/// Most attribute bytes put into one request: big enough to amortise the per-message cost over
/// hundreds of enclaves, small enough for one kernel allocation and for the multicast echo.
pub(crate) const MAX_PAYLOAD: usize = 32 * 1024;

/// Netlink header (16) plus generic netlink header (4).
pub(crate) const HEADERS_LEN: usize = 20;

const GENL_HDRLEN: usize = 4;
const NLMSG_HDRLEN: usize = 16;

/// Extended ack attributes: the error message (`NLMSGERR_ATTR_MSG`) and where the blamed
/// attribute starts in the request (`NLMSGERR_ATTR_OFFS`).
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLMSGERR_ATTR_OFFS: u16 = 2;

/// nlctrl attributes read from the GETFAMILY reply.
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_MCAST_GROUPS: u16 = 7;
const CTRL_ATTR_MCAST_GRP_NAME: u16 = 1;
const CTRL_ATTR_MCAST_GRP_ID: u16 = 2;

/// A generic netlink message body kept as raw attribute bytes: the seng family's commands are
/// encoded and decoded by seng-core, so this type only carries them through the framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SengPayload<'a> {
    pub cmd: u8,
    pub attrs: &'a [u8],
}

impl GenlFamily for SengPayload<'_> {
    fn family_name() -> &'static str {
        seng_core::genl::FAMILY_NAME
    }

    fn command(&self) -> u8 {
        self.cmd
    }

    fn version(&self) -> u8 {
        FAMILY_VERSION
    }
}

impl Emitable for SengPayload<'_> {
    fn buffer_len(&self) -> usize {
        self.attrs.len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        buffer[..self.attrs.len()].copy_from_slice(self.attrs);
    }
}

/// Appends one framed request to `out`.
pub(crate) fn frame(out: &mut Vec<u8>, family: u16, flags: u16, seq: u32, cmd: u8, attrs: &[u8]) {
    let mut genl = GenlMessage::from_payload(SengPayload { cmd, attrs });
    genl.set_resolved_family_id(family);
    put_message(out, flags, seq, genl);
}

/// Appends nlctrl's CTRL_CMD_GETFAMILY for `name` to `out`.
pub(crate) fn frame_get_family(out: &mut Vec<u8>, flags: u16, seq: u32, name: &str) {
    let ctrl = GenlCtrl { cmd: GenlCtrlCmd::GetFamily, nlas: vec![GenlCtrlAttrs::FamilyName(name.to_owned())] };
    put_message(out, flags, seq, GenlMessage::from_payload(ctrl));
}

fn put_message<F>(out: &mut Vec<u8>, flags: u16, seq: u32, genl: GenlMessage<F>)
where
    F: GenlFamily + Emitable + std::fmt::Debug,
{
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(genl));
    msg.finalize();
    let start = out.len();
    out.resize(start + msg.buffer_len(), 0);
    msg.serialize(&mut out[start..]);
}

/// Builds the attributes of a small request.
pub(crate) fn attrs(build: impl FnOnce(&mut AttrWriter<'_>) -> Result<(), NoRoom>) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0u8; MAX_PAYLOAD];
    let mut w = AttrWriter::new(&mut buf);
    build(&mut w).map_err(|NoRoom| Error::Request(format!("more than {MAX_PAYLOAD} bytes of attributes")))?;
    let len = w.len();
    buf.truncate(len);
    Ok(buf)
}

/// Packs ENCLAVE nests into message payloads of at most [`MAX_PAYLOAD`] bytes, each started by
/// the ORIGIN of the origin they are for.
pub(crate) struct NestPacker {
    buf: Vec<u8>,
    len: usize,
    count: usize,
    origin: Origin,
}

impl NestPacker {
    pub(crate) fn new() -> NestPacker {
        NestPacker { buf: vec![0; MAX_PAYLOAD], len: 0, count: 0, origin: Origin::Local }
    }

    /// The origin of the nests packed from now on; the packer must be empty.
    pub(crate) fn set_origin(&mut self, origin: Origin) {
        self.origin = origin;
    }

    /// The origin of the nests packed.
    pub(crate) fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Adds the nest `put` writes for the enclave at `addr`; false when the current payload is
    /// full (take it and retry).
    pub(crate) fn push(&mut self, addr: &IpAddr, put: impl FnOnce(&mut AttrWriter<'_>) -> Result<(), NoRoom>) -> Result<bool, Error> {
        let mut w = AttrWriter::new(&mut self.buf[self.len..]);
        let scoped = match self.count {
            0 => w.put_scope(&self.origin),
            _ => Ok(()),
        };
        match scoped.and_then(|()| put(&mut w)) {
            Ok(()) => {
                self.len += w.len();
                self.count += 1;
                Ok(true)
            }
            Err(NoRoom) if self.count > 0 => Ok(false),
            Err(NoRoom) => Err(Error::Request(format!("enclave {addr} needs more than {MAX_PAYLOAD} bytes"))),
        }
    }

    /// Nests packed so far.
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// The payload so far; resets the packer.
    pub(crate) fn take(&mut self) -> (&[u8], usize) {
        let (len, count) = (self.len, self.count);
        self.len = 0;
        self.count = 0;
        (&self.buf[..len], count)
    }
}

/// One message received from the kernel.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reply<'a> {
    /// A generic netlink message (a reply, a dump part or an event).
    Genl {
        /// Sequence number it answers (0 for events).
        seq: u32,
        /// Netlink flags (`NLM_F_MULTI`, `NLM_F_DUMP_INTR`).
        flags: u16,
        /// Generic netlink command.
        cmd: u8,
        /// Its attributes.
        attrs: &'a [u8],
    },
    /// NLMSG_ERROR: the ack of request `seq`, `Ok` or the kernel's refusal.
    Ack { seq: u32, result: Result<(), KernelError> },
    /// NLMSG_DONE: the end of dump `seq`.
    Done { seq: u32, flags: u16, result: Result<(), KernelError> },
    /// Anything else (NOOP, OVERRUN): ignored.
    Other,
}

/// Splits a received datagram into its netlink messages.
pub(crate) fn replies(buf: &[u8]) -> impl Iterator<Item = Result<Reply<'_>, Error>> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < NLMSG_HDRLEN {
            return None;
        }
        let msg = match NetlinkBuffer::new_checked(rest) {
            Ok(b) => b,
            Err(e) => {
                rest = &[];
                return Some(Err(Error::Protocol(format!("malformed netlink message: {e}"))));
            }
        };
        let len = msg.length() as usize;
        let (seq, flags, kind) = (msg.sequence_number(), msg.flags(), msg.message_type());
        let payload = &rest[NLMSG_HDRLEN..len];
        rest = rest.get((len + 3) & !3..).unwrap_or_default();
        Some(parse_reply(seq, flags, kind, payload))
    })
}

fn parse_reply(seq: u32, flags: u16, kind: u16, payload: &[u8]) -> Result<Reply<'_>, Error> {
    Ok(match kind {
        NLMSG_ERROR => {
            let err = ErrorBuffer::new_checked(payload).map_err(|e| Error::Protocol(format!("malformed ack: {e}")))?;
            let result = match err.code() {
                None => Ok(()),
                Some(code) => {
                    let (message, offset) = ext_ack(flags, err.payload());
                    Err(KernelError { errno: -code.get(), message, offset })
                }
            };
            Reply::Ack { seq, result }
        }
        NLMSG_DONE => {
            let code = first_u32(payload).map_or(0, |v| v as i32);
            let result = match code {
                0.. => Ok(()),
                _ => {
                    let (message, offset) = done_ext_ack(flags, payload.get(4..).unwrap_or_default());
                    Err(KernelError { errno: -code, message, offset })
                }
            };
            Reply::Done { seq, flags, result }
        }
        NLMSG_NOOP | NLMSG_OVERRUN => Reply::Other,
        _ => {
            let header = payload.get(..GENL_HDRLEN).ok_or_else(|| Error::Protocol("truncated generic netlink header".into()))?;
            Reply::Genl { seq, flags, cmd: header[0], attrs: &payload[GENL_HDRLEN..] }
        }
    })
}

/// The extended ack (message, blamed offset) of an NLMSG_ERROR: after the error code come the
/// request's header (and its payload unless NLM_F_CAPPED), then the NLMSGERR_ATTR_* attributes.
fn ext_ack(flags: u16, after_code: &[u8]) -> (Option<String>, Option<u32>) {
    if flags & NLM_F_ACK_TLVS == 0 {
        return (None, None);
    }
    let skip = if flags & NLM_F_CAPPED != 0 {
        Some(NLMSG_HDRLEN)
    } else {
        first_u32(after_code).map(|len| (len as usize + 3) & !3)
    };
    skip.and_then(|skip| after_code.get(skip..)).map_or((None, None), ext_ack_tlvs)
}

/// The extended ack of an NLMSG_DONE: the attributes follow the error code directly.
fn done_ext_ack(flags: u16, after_code: &[u8]) -> (Option<String>, Option<u32>) {
    match flags & NLM_F_ACK_TLVS {
        0 => (None, None),
        _ => ext_ack_tlvs(after_code),
    }
}

fn ext_ack_tlvs(tlvs: &[u8]) -> (Option<String>, Option<u32>) {
    let (mut message, mut offset) = (None, None);
    for a in Attrs::new(tlvs).filter_map(Result::ok) {
        match a.kind {
            NLMSGERR_ATTR_MSG => {
                let text = a.payload.split(|&b| b == 0).next().unwrap_or_default();
                message = Some(String::from_utf8_lossy(text).into_owned());
            }
            NLMSGERR_ATTR_OFFS => offset = first_u32(a.payload),
            _ => {}
        }
    }
    (message, offset)
}

/// The native-endian u32 that `bytes` start with (netlink lengths, codes and attribute values).
fn first_u32(bytes: &[u8]) -> Option<u32> {
    bytes.first_chunk().map(|b| u32::from_ne_bytes(*b))
}

/// Which ENCLAVE nest of the framed request `message` starts at `offset` (bytes from its netlink
/// header, as the kernel blames it), counted from 0 (an ORIGIN before the nests is not one).
pub(crate) fn blamed_nest(message: &[u8], offset: u32) -> Option<usize> {
    let target = (offset as usize).checked_sub(HEADERS_LEN)?;
    let len = first_u32(message)? as usize;
    let mut attrs = Attrs::new(message.get(HEADERS_LEN..len)?);
    let mut index = 0;
    while attrs.offset() < target {
        index += usize::from(attrs.next()?.ok()?.kind == attr::ENCLAVE);
    }
    (attrs.offset() == target && matches!(attrs.next(), Some(Ok(a)) if a.kind == attr::ENCLAVE)).then_some(index)
}

/// The family id and multicast group id from nlctrl's GETFAMILY reply. Read leniently with
/// [`Attrs`], so attributes that newer kernels add do not break resolution.
pub(crate) fn parse_family(attrs: &[u8], group_name: &str) -> Result<(u16, Option<u32>), Error> {
    let mut id = None;
    let mut group = None;
    for a in Attrs::new(attrs).filter_map(Result::ok) {
        match a.kind {
            CTRL_ATTR_FAMILY_ID => id = a.payload.get(..2).map(|b| u16::from_ne_bytes([b[0], b[1]])),
            CTRL_ATTR_MCAST_GROUPS => {
                for g in Attrs::new(a.payload).filter_map(Result::ok) {
                    let (mut name, mut gid) = (None, None);
                    for f in Attrs::new(g.payload).filter_map(Result::ok) {
                        match f.kind {
                            CTRL_ATTR_MCAST_GRP_NAME => name = f.payload.split(|&b| b == 0).next(),
                            CTRL_ATTR_MCAST_GRP_ID => gid = first_u32(f.payload),
                            _ => {}
                        }
                    }
                    if name == Some(group_name.as_bytes()) {
                        group = gid;
                    }
                }
            }
            _ => {}
        }
    }
    let id = id.ok_or_else(|| Error::Protocol("nlctrl reply without a family id".into()))?;
    Ok((id, group))
}

/// Decodes one ENCLAVE nest of a GET reply or dump, with the entry's origin.
pub(crate) fn decode_enclave(nest: &[u8]) -> Result<Registration, Error> {
    let (origin, spec) = parse_entry(nest).map_err(|e| Error::Protocol(format!("bad enclave in reply: {e}")))?;
    Registration::from_spec(&spec, origin).ok_or_else(|| Error::Protocol(format!("enclave {} in reply lacks its application or host", spec.addr)))
}

/// The ENCLAVE nests of a run of attributes, decoded.
pub(crate) fn decode_enclaves(attrs: &[u8]) -> impl Iterator<Item = Result<Registration, Error>> + '_ {
    Attrs::new(attrs).filter_map(|a| match a {
        Ok(a) if a.kind == attr::ENCLAVE => Some(decode_enclave(a.payload)),
        Ok(_) => None,
        Err(e) => Some(Err(Error::Protocol(format!("bad attribute in reply: {e}")))),
    })
}

/// Decodes a STATS reply.
pub(crate) fn decode_stats(attrs: &[u8]) -> Result<Stats, Error> {
    let mut stats = Stats::default();
    for a in Attrs::new(attrs) {
        let a = a.map_err(|e| Error::Protocol(format!("bad attribute in stats reply: {e}")))?;
        let value = <[u8; 8]>::try_from(a.payload).map(u64::from_ne_bytes).ok();
        let slot = match a.kind {
            attr::STAT_ENCLAVES => &mut stats.enclaves,
            attr::STAT_APPS => &mut stats.apps,
            attr::STAT_CAPACITY => &mut stats.capacity,
            attr::STAT_SLOTS => &mut stats.slots,
            attr::STAT_GENERATION => &mut stats.generation,
            _ => continue,
        };
        *slot = value.ok_or_else(|| Error::Protocol(format!("stats attribute {} is not a u64", a.kind)))?;
    }
    Ok(stats)
}

#[cfg(test)]
mod test {
    use std::net::Ipv4Addr;

    use seng_core::genl::{cmd, Request};
    use seng_core::{Category, Measurement};

    use super::*;

    fn app() -> Measurement {
        Measurement([0xab; 32])
    }

    /// A request as the kernel receives it: the bytes after the genl header must parse back with
    /// the kernel's own decoder into what was sent.
    #[test]
    fn frames_requests_the_kernel_decodes() {
        let e = Registration {
            addr: "192.168.28.10".parse().unwrap(),
            app: app(),
            host: "10.0.0.5".parse().unwrap(),
            categories: vec![Category::new(b"Browser").unwrap()],
            origin: Origin::Local,
        };
        let payload = attrs(|w| e.emit(w)).unwrap();
        let mut out = Vec::new();
        frame(&mut out, 0x1234, 0x0005, 77, cmd::ENCLAVE_SET, &payload);
        #[rustfmt::skip]
        let expected: Vec<u8> = [
            // nlmsghdr: len 20+68, type 0x1234, flags REQUEST|ACK, seq 77, port 0
            &[88, 0, 0, 0, 0x34, 0x12, 0x05, 0x00, 77, 0, 0, 0, 0, 0, 0, 0][..],
            // genlmsghdr: cmd 2, version 1
            &[2, 1, 0, 0],
            // ENCLAVE nest (len 68, type 8 | NLA_F_NESTED)
            &[68, 0, 8, 0x80],
            // ADDR 192.168.28.10
            &[8, 0, 9, 0, 192, 168, 28, 10],
            // APP
            &[36, 0, 1, 0], &[0xab; 32],
            // HOST_ADDR 10.0.0.5
            &[8, 0, 10, 0, 10, 0, 0, 5],
            // CAT "Browser\0"
            &[12, 0, 2, 0], b"Browser\0",
        ]
        .concat();
        assert_eq!(out, expected);
        let Ok(Request::Register(additions)) = Request::parse(cmd::ENCLAVE_SET, &out[HEADERS_LEN..]) else { panic!("kernel rejects it") };
        let got: Vec<_> = additions.iter_at().map(|item| item.expect("kernel rejects it").1).map(|s| (s.addr, s.app, s.host, s.with_categories(|c| c.to_vec()))).collect();
        assert_eq!(got, [(e.addr, Some(e.app), Some(e.host), e.categories.clone())]);
    }

    #[test]
    fn packer_fills_messages_up_to_the_limit() {
        let e = |i: u32| Registration { addr: IpAddr::V4(Ipv4Addr::from(i)), app: app(), host: "10.0.0.5".parse().unwrap(), categories: vec![], origin: Origin::Local };
        let mut packer = NestPacker::new();
        let mut i = 0;
        let push = |packer: &mut NestPacker, e: &Registration| packer.push(&e.addr, |w| e.emit(w));
        while push(&mut packer, &e(i)).unwrap() {
            i += 1;
        }
        // Each nest: 4 + ADDR 8 + APP 36 + HOST 8 = 56 bytes.
        assert_eq!(packer.count(), MAX_PAYLOAD / 56);
        let (payload, count) = packer.take();
        assert_eq!(count, MAX_PAYLOAD / 56);
        assert!(matches!(Request::parse(cmd::REPLACE_ADD, payload), Ok(Request::StagedRegister(l)) if l.iter_at().filter(Result::is_ok).count() == count));
        assert_eq!(packer.count(), 0);
        let huge = Registration { categories: (0..2000).map(|i| Category::new(format!("{i:020}").as_bytes()).unwrap()).collect(), ..e(1) };
        assert!(matches!(push(&mut packer, &huge), Err(Error::Request(_))), "an enclave no message can hold is refused");
        assert_eq!(packer.count(), 0);
        // A gateway's nests: every message starts with its ORIGIN.
        let gw: Origin = "gw-b".parse().unwrap();
        packer.set_origin(gw);
        for _ in 0..2 {
            while push(&mut packer, &e(i)).unwrap() {
                i += 1;
            }
            let (payload, count) = packer.take();
            assert_eq!(count, (MAX_PAYLOAD - 12) / 56);
            let Ok(scoped) = seng_core::genl::Scoped::parse(cmd::ENCLAVE_SET, payload) else { panic!("kernel rejects it") };
            assert_eq!(scoped.origin, gw);
            assert!(matches!(scoped.request, Request::Register(l) if l.len() == count));
        }
    }

    #[test]
    fn blamed_offsets_name_the_nest() {
        let e = |i: u32| Registration { addr: IpAddr::V4(Ipv4Addr::from(i)), app: app(), host: "10.0.0.5".parse().unwrap(), categories: vec![], origin: Origin::Local };
        let mut packer = NestPacker::new();
        for i in 0..3 {
            assert!(packer.push(&e(i).addr, |w| e(i).emit(w)).unwrap());
        }
        let mut message = Vec::new();
        frame(&mut message, 0x20, 5, 9, cmd::REPLACE_ADD, packer.take().0);
        // Nests of 56 bytes after the 20 bytes of headers.
        assert_eq!(blamed_nest(&message, 20), Some(0));
        assert_eq!(blamed_nest(&message, 20 + 2 * 56), Some(2));
        assert_eq!(blamed_nest(&message, 20 + 56 + 4), None, "inside a nest");
        assert_eq!(blamed_nest(&message, 20 + 3 * 56), None, "past the last nest");
        assert_eq!(blamed_nest(&message, 8), None, "inside the headers");
        // After a gateway's ORIGIN (12 bytes), which is no nest.
        packer.set_origin("gw-b".parse().unwrap());
        for i in 0..2 {
            assert!(packer.push(&e(i).addr, |w| e(i).emit(w)).unwrap());
        }
        message.clear();
        frame(&mut message, 0x20, 5, 9, cmd::REPLACE_ADD, packer.take().0);
        assert_eq!(blamed_nest(&message, 20), None, "the ORIGIN");
        assert_eq!(blamed_nest(&message, 20 + 12), Some(0));
        assert_eq!(blamed_nest(&message, 20 + 12 + 56), Some(1));
    }

    #[test]
    fn decodes_acks_with_extended_messages() {
        #[rustfmt::skip]
        let datagram: Vec<u8> = [
            // ack of seq 5: success
            &[36, 0, 0, 0, 2, 0, 0x00, 0x01, 5, 0, 0, 0, 0x10, 0, 0, 0][..], &[0, 0, 0, 0],
            &[20, 0, 0, 0, 0x20, 0, 5, 0, 5, 0, 0, 0, 0, 0, 0, 0],
            // ack of seq 6: -ENOENT, capped, with NLMSGERR_ATTR_MSG and NLMSGERR_ATTR_OFFS
            &[84, 0, 0, 0, 2, 0, 0x00, 0x03, 6, 0, 0, 0, 0x10, 0, 0, 0], &(-2i32).to_ne_bytes(),
            &[20, 0, 0, 0, 0x20, 0, 5, 0, 6, 0, 0, 0, 0, 0, 0, 0],
            &[40, 0, 1, 0], b"address is not a registered enclave\0",
            &[8, 0, 2, 0], &76u32.to_ne_bytes(),
        ]
        .concat();
        let got: Vec<_> = replies(&datagram).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            got,
            [
                Reply::Ack { seq: 5, result: Ok(()) },
                Reply::Ack {
                    seq: 6,
                    result: Err(KernelError { errno: 2, message: Some("address is not a registered enclave".into()), offset: Some(76) })
                },
            ]
        );
    }

    #[test]
    fn decodes_uncapped_errors_done_and_replies() {
        let request = {
            let mut out = Vec::new();
            frame(&mut out, 0x20, 5, 9, cmd::STATS, &[8, 0, 1, 0, 1, 2, 3, 4]);
            out
        };
        let mut datagram = Vec::new();
        // Error without NLM_F_CAPPED: the whole request is echoed before the attributes.
        let ext = [&[14, 0, 1, 0][..], b"bad thing\0", &[0, 0]].concat();
        let len = 16 + 4 + request.len() + ext.len();
        datagram.extend_from_slice(&[len as u8, 0, 0, 0, 2, 0, 0x00, 0x02, 9, 0, 0, 0, 0, 0, 0, 0]);
        datagram.extend_from_slice(&(-22i32).to_ne_bytes());
        datagram.extend_from_slice(&request);
        datagram.extend_from_slice(&ext);
        // A dump part with NLM_F_MULTI | NLM_F_DUMP_INTR and a DONE.
        datagram.extend_from_slice(&[28, 0, 0, 0, 0x20, 0, 0x12, 0, 10, 0, 0, 0, 0, 0, 0, 0, cmd::GET, 1, 0, 0]);
        datagram.extend_from_slice(&[8, 0, 11, 0, 7, 0, 0, 0]);
        datagram.extend_from_slice(&[20, 0, 0, 0, 3, 0, 2, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let got: Vec<_> = replies(&datagram).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            got,
            [
                Reply::Ack { seq: 9, result: Err(KernelError { errno: 22, message: Some("bad thing".into()), offset: None }) },
                Reply::Genl { seq: 10, flags: 0x12, cmd: cmd::GET, attrs: &[8, 0, 11, 0, 7, 0, 0, 0] },
                Reply::Done { seq: 10, flags: 2, result: Ok(()) },
            ]
        );
    }

    #[test]
    fn decodes_replies_with_the_kernels_writer() {
        let e = Registration {
            addr: "fd00:28::10".parse().unwrap(),
            app: app(),
            host: "2001:db8::5".parse().unwrap(),
            categories: vec![Category::new(b"Web Mail").unwrap(), Category::new(b"Browser").unwrap()],
            origin: Origin::Local,
        };
        let remote = Registration { addr: "10.1.2.3".parse().unwrap(), categories: vec![], origin: "gw-b".parse().unwrap(), ..e.clone() };
        let payload = attrs(|w| {
            w.put_entry(None, &e.addr, &e.app, &e.host, &e.categories)?;
            w.put_entry(remote.origin.gateway(), &remote.addr, &remote.app, &remote.host, &[])
        })
        .unwrap();
        let got: Vec<_> = decode_enclaves(&payload).collect::<Result<_, _>>().unwrap();
        assert_eq!(got, [e, remote]);

        let stats = attrs(|w| {
            for (k, v) in [(attr::STAT_ENCLAVES, 3), (attr::STAT_APPS, 2), (attr::STAT_CAPACITY, 1 << 20), (attr::STAT_SLOTS, 8), (attr::STAT_GENERATION, 17)] {
                w.put_u64(k, v)?;
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(decode_stats(&stats).unwrap(), Stats { enclaves: 3, apps: 2, capacity: 1 << 20, slots: 8, generation: 17 });
        assert!(decode_stats(&[8, 0, 11, 0, 1, 0, 0, 0]).is_err(), "a 4-byte counter is refused");
        let truncated = &payload[..payload.len() - 4];
        assert!(decode_enclaves(truncated).any(|r| r.is_err()));
    }

    #[test]
    fn reads_family_and_group_from_nlctrl() {
        #[rustfmt::skip]
        let reply: Vec<u8> = [
            &[16, 0, 2, 0][..], b"seng_family\0",
            &[6, 0, 1, 0, 0x1c, 0, 0, 0],
            // An attribute this library does not know must not matter.
            &[8, 0, 99, 0, 1, 2, 3, 4],
            &[52, 0, 7, 0x80],
            &[20, 0, 1, 0x80, 8, 0, 2, 0, 9, 0, 0, 0, 8, 0, 1, 0, b'o', b't', 0, 0],
            &[28, 0, 2, 0x80, 8, 0, 2, 0, 11, 0, 0, 0], &[15, 0, 1, 0], b"seng_mcgrp\0", &[0],
        ]
        .concat();
        assert_eq!(parse_family(&reply, "seng_mcgrp").unwrap(), (0x1c, Some(11)));
        assert_eq!(parse_family(&reply, "other").unwrap(), (0x1c, None));
        assert!(parse_family(&reply[16..16], "seng_mcgrp").is_err());
    }
}
