//! The DNS listener (UDP and TCP): every A/AAAA question is answered with the gateway's own
//! address, except static records and passthrough names (resolved with the system resolver).
//! Nothing else is ever forwarded, so DNS is no exfiltration channel. Malformed packets are
//! dropped and counted.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use policy::{DnsConfig, DnsValue, HostName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use crate::metrics::Metrics;
use crate::shared::Shared;

const TTL: u32 = 60;
const PASSTHROUGH_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves DNS over UDP until the task is dropped.
pub async fn serve_udp(shared: Arc<Shared>, sock: UdpSocket) {
    let sock = Arc::new(sock);
    let inflight = Arc::new(Semaphore::new(256));
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let packet = buf[..n].to_vec();
        let Ok(permit) = inflight.clone().try_acquire_owned() else {
            // Too many passthrough lookups outstanding: drop, as a loaded resolver would.
            continue;
        };
        let (shared, sock) = (shared.clone(), sock.clone());
        tokio::spawn(async move {
            if let Some(resp) = answer(&shared.config.dns, &shared.metrics, &packet).await {
                let _ = sock.send_to(&udp_size(resp, &packet), peer).await;
            }
            drop(permit);
        });
    }
}

/// Truncates an answer that does not fit a classic 512-byte UDP response (or the query's
/// EDNS payload size).
pub fn udp_size(resp: Vec<u8>, query: &[u8]) -> Vec<u8> {
    let limit = Message::from_vec(query)
        .ok()
        .map_or(512, |q| usize::from(q.max_payload().max(512)));
    if resp.len() <= limit {
        return resp;
    }
    Message::from_vec(&resp)
        .ok()
        .and_then(|m| m.truncate().to_vec().ok())
        .unwrap_or(resp)
}

/// Serves DNS over TCP until the task is dropped.
pub async fn serve_tcp(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(serve_tcp_conn(shared.clone(), tcp));
    }
}

async fn serve_tcp_conn(shared: Arc<Shared>, mut tcp: TcpStream) {
    let idle = Duration::from_secs(10);
    loop {
        let mut len = [0u8; 2];
        if !matches!(
            tokio::time::timeout(idle, tcp.read_exact(&mut len)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if !matches!(
            tokio::time::timeout(idle, tcp.read_exact(&mut msg)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let Some(resp) = answer(&shared.config.dns, &shared.metrics, &msg).await else {
            return;
        };
        let Ok(n) = u16::try_from(resp.len()) else {
            return;
        };
        if tcp.write_all(&n.to_be_bytes()).await.is_err() || tcp.write_all(&resp).await.is_err() {
            return;
        }
    }
}

/// The response to one query packet; `None` (and a count) when it is malformed.
pub async fn answer(dns: &DnsConfig, metrics: &Metrics, packet: &[u8]) -> Option<Vec<u8>> {
    let Ok(req) = Message::from_vec(packet) else {
        metrics.dns_malformed.fetch_add(1, Relaxed);
        return None;
    };
    if req.metadata.message_type != MessageType::Query {
        metrics.dns_malformed.fetch_add(1, Relaxed);
        return None;
    }
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.metadata.authoritative = true;
    resp.add_queries(req.queries.clone());
    if req.metadata.op_code != OpCode::Query || req.queries.len() != 1 {
        resp.metadata.response_code = ResponseCode::NotImp;
        return resp.to_vec().ok();
    }
    let q = &req.queries[0];
    match records(dns, metrics, q.name(), q.query_type()).await {
        Ok(answers) => {
            resp.add_answers(answers);
        }
        Err(code) => resp.metadata.response_code = code,
    }
    resp.to_vec().ok()
}

async fn records(
    dns: &DnsConfig,
    metrics: &Metrics,
    qname: &Name,
    qtype: RecordType,
) -> Result<Vec<Record>, ResponseCode> {
    let ascii = qname.to_ascii();
    let name: HostName = ascii.parse().map_err(|_| ResponseCode::Refused)?;
    let rec = |rdata: RData| Record::from_rdata(qname.clone(), TTL, rdata);
    let statics: Vec<&DnsValue> = dns
        .records
        .iter()
        .filter(|r| r.name == name)
        .map(|r| &r.value)
        .collect();
    if !statics.is_empty() {
        metrics.dns_answered[2].fetch_add(1, Relaxed);
        return Ok(statics
            .into_iter()
            .filter_map(|v| match (v, qtype) {
                (DnsValue::A(ip), RecordType::A) => Some(rec(RData::A(A(*ip)))),
                (DnsValue::Aaaa(ip), RecordType::AAAA) => Some(rec(RData::AAAA(AAAA(*ip)))),
                (DnsValue::Cname(target), _) => Name::from_ascii(format!("{target}."))
                    .ok()
                    .map(|n| rec(RData::CNAME(CNAME(n)))),
                _ => None,
            })
            .collect());
    }
    let host = policy::Host::Name(name.clone());
    if dns.passthrough.iter().any(|p| p.matches(&host)) {
        metrics.dns_answered[1].fetch_add(1, Relaxed);
        let found = tokio::time::timeout(
            PASSTHROUGH_TIMEOUT,
            tokio::net::lookup_host((name.as_str(), 0)),
        )
        .await
        .map_err(|_| ResponseCode::ServFail)?
        .map_err(|_| ResponseCode::ServFail)?;
        return Ok(found
            .map(|sa: SocketAddr| sa.ip())
            .filter_map(|ip| match (ip, qtype) {
                (IpAddr::V4(v4), RecordType::A) => Some(rec(RData::A(A(v4)))),
                (IpAddr::V6(v6), RecordType::AAAA) => Some(rec(RData::AAAA(AAAA(v6)))),
                _ => None,
            })
            .collect());
    }
    metrics.dns_answered[0].fetch_add(1, Relaxed);
    Ok(match qtype {
        RecordType::A => dns
            .proxy_ip
            .map(|ip| rec(RData::A(A(ip))))
            .into_iter()
            .collect(),
        RecordType::AAAA => dns
            .proxy_ip6
            .map(|ip| rec(RData::AAAA(AAAA(ip))))
            .into_iter()
            .collect(),
        _ => Vec::new(),
    })
}
