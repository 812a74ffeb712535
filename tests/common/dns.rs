//! A real name server on 127.0.0.1 (UDP, an ephemeral port) whose answers a test sets
//! and changes: A records for the names it knows, NXDOMAIN for the others. Messages are
//! hickory's (through the resolver splitgate uses, so the versions always match).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::A;
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use tokio::net::UdpSocket;

pub struct DnsServer {
    pub addr: SocketAddr,
    records: Arc<Mutex<HashMap<String, Vec<Ipv4Addr>>>>,
    queries: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl DnsServer {
    pub async fn start() -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind the test name server");
        let addr = socket.local_addr().unwrap();
        let records: Arc<Mutex<HashMap<String, Vec<Ipv4Addr>>>> = Arc::default();
        let queries = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(serve(socket, records.clone(), queries.clone()));
        DnsServer {
            addr,
            records,
            queries,
            task,
        }
    }

    /// From now on `name` resolves to `addrs` (none: an empty answer, NOERROR).
    pub fn set(&self, name: &str, addrs: &[&str]) {
        let addrs = addrs.iter().map(|a| a.parse().expect("an IPv4 address")).collect();
        self.records.lock().unwrap().insert(name.to_ascii_lowercase(), addrs);
    }

    /// Questions answered so far.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::SeqCst)
    }

    /// Closes the socket: the port no longer answers.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(socket: UdpSocket, records: Arc<Mutex<HashMap<String, Vec<Ipv4Addr>>>>, queries: Arc<AtomicU64>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let Ok(request) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        queries.fetch_add(1, Ordering::SeqCst);
        let mut reply = Message::new();
        reply
            .set_id(request.id())
            .set_message_type(MessageType::Response)
            .set_op_code(request.op_code())
            .set_recursion_desired(request.recursion_desired())
            .set_recursion_available(true)
            .set_authoritative(true);
        for query in request.queries() {
            reply.add_query(query.clone());
            let name = query.name().to_ascii().trim_end_matches('.').to_ascii_lowercase();
            let known = records.lock().unwrap().get(&name).cloned();
            match known {
                None => {
                    reply.set_response_code(ResponseCode::NXDomain);
                }
                Some(addrs) if query.query_type() == RecordType::A => {
                    for ip in addrs {
                        reply.add_answer(Record::from_rdata(query.name().clone(), 1, RData::A(A(ip))));
                    }
                }
                Some(_) => {}
            }
        }
        if let Ok(bytes) = reply.to_vec() {
            let _ = socket.send_to(&bytes, peer).await;
        }
    }
}
