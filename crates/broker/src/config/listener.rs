//! Listener definitions (`listeners`, `advertised.listeners`, `listener.security.protocol.map`).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerConfig {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub protocol: SecurityProtocol,
}

impl ListenerConfig {
    /// Parses `NAME://host:port,...`; the protocol of each name comes from the protocol map (`NAME:PROTOCOL,...`),
    /// with the names PLAINTEXT/SSL/SASL_* mapping to themselves as in Kafka.
    pub fn parse_list(list: &str, protocol_map: &str) -> Result<Vec<ListenerConfig>, String> {
        let mut out: Vec<ListenerConfig> = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, addr) = item
                .split_once("://")
                .ok_or_else(|| format!("listener `{item}` is not of the form NAME://host:port"))?;
            let (host, port) = addr.rsplit_once(':').ok_or_else(|| format!("listener `{item}` has no port"))?;
            let port: u16 = port.parse().map_err(|_| format!("listener `{item}` has a bad port"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            // Kafka binds all interfaces for an empty host.
            let host = if host.is_empty() { "0.0.0.0" } else { host };
            let name = name.to_ascii_uppercase();
            let protocol_name = protocol_map
                .split(',')
                .filter_map(|p| p.trim().split_once(':'))
                .find(|(n, _)| n.eq_ignore_ascii_case(&name))
                .map(|(_, p)| p.to_ascii_uppercase())
                .unwrap_or_else(|| name.clone());
            let protocol = match protocol_name.as_str() {
                "PLAINTEXT" => SecurityProtocol::Plaintext,
                "SSL" | "SASL_PLAINTEXT" | "SASL_SSL" => {
                    return Err(format!("listener {name}: security protocol {protocol_name} is not supported yet"))
                }
                other => return Err(format!("listener {name}: unknown security protocol `{other}`")),
            };
            if out.iter().any(|l| l.name == name) {
                return Err(format!("listener name {name} is used twice"));
            }
            out.push(ListenerConfig { name, host: host.to_string(), port, protocol });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_several_listeners() {
        let l = ListenerConfig::parse_list(
            "PLAINTEXT://127.0.0.1:9092, INTERNAL://:9093",
            "PLAINTEXT:PLAINTEXT,INTERNAL:PLAINTEXT",
        )
        .unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].host, "0.0.0.0");
        assert_eq!(l[1].port, 9093);
        assert!(ListenerConfig::parse_list("SSL://x:1", "").is_err());
        assert!(ListenerConfig::parse_list("PLAINTEXT://x", "").is_err());
    }
}
