//! Who a client certificate names. With client certificates required
//! (`tls.client_ca`), a worker registers only under a name its certificate
//! carries: one of its DNS subject alternative names, or its common name when
//! it has none, must equal the registration's `name` or `hostname`
//! (ignoring ASCII case, as DNS does).

use tokio_rustls::rustls::pki_types::CertificateDer;

use crate::error::{Error, Result};

/// Checks that the client's certificate (`peer_certs`, leaf first) names the
/// worker registering as `name` on `hostname`.
///
/// # Errors
/// `PermissionDenied`, saying which names the certificate carries and which were needed.
pub(crate) fn check_worker(peer_certs: Option<&[CertificateDer<'_>]>, name: &str, hostname: &str) -> Result<()> {
    let carried = peer_certs.and_then(<[_]>::first).map(certificate_names).unwrap_or_default();
    let needed: Vec<&str> = [name, hostname].into_iter().filter(|n| !n.is_empty()).collect();
    if carried.iter().any(|have| needed.iter().any(|want| have.eq_ignore_ascii_case(want))) {
        return Ok(());
    }
    let carried = if carried.is_empty() { "no name".to_owned() } else { carried.join(", ") };
    Err(Error::PermissionDenied(format!(
        "the client certificate names {carried}, but this worker registers as {}: \
         the certificate must name the worker's name or hostname",
        if needed.is_empty() { "nothing".to_owned() } else { needed.join(" on ") }
    )))
}

/// The DNS names of a certificate's subject alternative names, or its common
/// name when it has none; empty when it does not parse.
fn certificate_names(der: &CertificateDer<'_>) -> Vec<String> {
    let Ok(cert) = webpki::EndEntityCert::try_from(der) else { return Vec::new() };
    let dns: Vec<String> = cert.valid_dns_names().map(str::to_owned).collect();
    if !dns.is_empty() {
        return dns;
    }
    common_name(cert.subject()).into_iter().collect()
}

/// DER of the common name attribute type (2.5.4.3).
const COMMON_NAME_OID: &[u8] = &[0x55, 0x04, 0x03];
/// DER tag of an object identifier.
const OID_TAG: u8 = 0x06;

/// The common name in a certificate subject (the contents of its Name
/// SEQUENCE: SETs of SEQUENCEs of an OID and a string).
fn common_name(subject: &[u8]) -> Option<String> {
    let mut names = subject;
    while !names.is_empty() {
        let (_, mut set, rest) = der_element(names)?;
        names = rest;
        while !set.is_empty() {
            let (_, attribute, rest) = der_element(set)?;
            set = rest;
            let (tag, oid, value) = der_element(attribute)?;
            if tag == OID_TAG && oid == COMMON_NAME_OID {
                let (_, text, _) = der_element(value)?;
                return std::str::from_utf8(text).ok().map(str::to_owned);
            }
        }
    }
    None
}

/// The first DER element of `input`: its tag, its contents and what follows it.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        (bytes.iter().fold(0_usize, |length, &byte| (length << 8) | usize::from(byte)), rest)
    };
    if rest.len() < length {
        return None;
    }
    let (contents, after) = rest.split_at(length);
    Some((tag, contents, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(dns: &[&str], common_name: Option<&str>) -> CertificateDer<'static> {
        let mut params =
            rcgen::CertificateParams::new(dns.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "Hive tests");
        if let Some(name) = common_name {
            params.distinguished_name.push(rcgen::DnType::CommonName, name);
        }
        params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().der().clone()
    }

    #[test]
    fn a_san_naming_the_worker_or_its_host_is_accepted() {
        let cert = certificate(&["worker-1", "Host-A"], Some("ignored-cn"));
        assert!(check_worker(Some(std::slice::from_ref(&cert)), "worker-1", "elsewhere").is_ok());
        assert!(check_worker(Some(std::slice::from_ref(&cert)), "other", "host-a").is_ok(), "DNS names ignore case");
        let err = check_worker(Some(&[cert]), "ignored-cn", "elsewhere").unwrap_err().to_string();
        assert!(err.contains("names worker-1, Host-A") && err.contains("ignored-cn on elsewhere"), "{err}");
    }

    #[test]
    fn without_sans_the_common_name_counts() {
        let cert = certificate(&[], Some("worker-cn"));
        assert_eq!(certificate_names(&cert), vec!["worker-cn".to_owned()]);
        assert!(check_worker(Some(&[cert]), "worker-cn", "").is_ok());
    }

    #[test]
    fn no_certificate_or_garbage_names_nothing() {
        let err = check_worker(None, "w", "h").unwrap_err();
        assert!(matches!(err, Error::PermissionDenied(ref text) if text.contains("names no name")), "{err}");
        let garbage = CertificateDer::from(vec![0x30, 0x84, 0xff, 0xff]);
        assert!(check_worker(Some(&[garbage]), "w", "h").is_err());
        assert_eq!(common_name(&[0x31, 0x05, 0x30]), None, "a truncated subject parses to nothing");
    }
}
