//! Client certificates: verifying them against a CA bundle (`tls_ca`, `tls_verify`) and reading
//! the names a certificate carries, so that it can stand for a user (`tls_map`), as nats-server's
//! `verify_and_map` does.
//!
//! A certificate names its holder in its subject alternative names (e-mail addresses, DNS names,
//! URIs) and in its subject distinguished name. [`CertIdentity`] keeps them in the order a user is
//! looked up by: e-mails, then DNS names, then URIs, then the subject in RFC 2253 form
//! (`CN=alice,O=Acme`: the most specific part first, `,` between parts, `\` before special
//! characters). Parsing the DER is left to `x509-parser`; only the string form is written here.

use std::path::Path;
use std::sync::Arc;

use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

/// Whether and how clients present certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCerts {
    /// A client may present one; if it does, it must be signed by the CA bundle.
    Optional,
    /// Every client presents one signed by the CA bundle, or its handshake fails.
    Required,
}

/// A verifier of client certificates signed by the CAs of a PEM bundle.
pub fn client_verifier(
    ca: &Path,
    certs: ClientCerts,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let found: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
        .and_then(|certs| certs.collect())
        .map_err(|e| format!("key `tls_ca`: {}: {e}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found);
    if added == 0 {
        return Err(format!("key `tls_ca`: {}: no CA certificate", ca.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = match certs {
        ClientCerts::Optional => builder.allow_unauthenticated(),
        ClientCerts::Required => builder,
    };
    builder.build().map_err(|e| format!("key `tls_ca`: {e}"))
}

/// Why users without a password or token are refused: only client certificates can prove them,
/// so they need `tls_map`.
pub fn check_secrets(users: &[super::auth::UserConfig], tls_map: bool) -> Result<(), String> {
    match users
        .iter()
        .position(|u| u.password.is_none() && u.token.is_none())
    {
        Some(i) if !tls_map => Err(format!(
            "key `users[{i}].password`: a user needs a password or a token (or `tls_map`, to be \
             known by its client certificate)"
        )),
        _ => Ok(()),
    }
}

/// Longest name of a user known by its client certificate: room for a long distinguished name.
const CERTIFICATE_NAME_BYTES_MAX: usize = 1024;

/// The name of a user known by its client certificate: not empty, printable (it is logged).
pub(super) fn check_certificate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > CERTIFICATE_NAME_BYTES_MAX {
        return Err(format!(
            "must be 1 to {CERTIFICATE_NAME_BYTES_MAX} bytes, not {}",
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("must not hold control characters".into());
    }
    Ok(())
}

/// The names a client certificate carries, in the order they are matched against user names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertIdentity {
    pub emails: Vec<String>,
    pub dns_names: Vec<String>,
    pub uris: Vec<String>,
    /// The subject distinguished name in RFC 2253 form.
    pub subject: String,
}

impl CertIdentity {
    /// Reads the names of a DER certificate (one the TLS handshake already verified).
    pub fn from_der(der: &[u8]) -> Result<CertIdentity, String> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
        let mut identity = CertIdentity {
            subject: rfc2253(cert.subject()),
            ..CertIdentity::default()
        };
        let names = cert.subject_alternative_name().map_err(|e| e.to_string())?;
        for name in names.iter().flat_map(|san| &san.value.general_names) {
            match name {
                GeneralName::RFC822Name(email) => identity.emails.push(email.to_string()),
                GeneralName::DNSName(dns) => identity.dns_names.push(dns.to_string()),
                GeneralName::URI(uri) => identity.uris.push(uri.to_string()),
                _ => {}
            }
        }
        Ok(identity)
    }

    /// Every name, in the order a user is looked up by: e-mail addresses, DNS names, URIs, the
    /// subject (nats-server's order).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.emails
            .iter()
            .chain(&self.dns_names)
            .chain(&self.uris)
            .map(String::as_str)
            .chain((!self.subject.is_empty()).then_some(self.subject.as_str()))
    }
}

/// A distinguished name in RFC 2253 form: relative names from the last to the first, `,` between
/// them, `+` between the attributes of one.
fn rfc2253(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| rdn.iter().map(attribute).collect::<Vec<String>>().join("+"))
        .collect();
    rdns.into_iter().rev().collect::<Vec<String>>().join(",")
}

/// `TYPE=value`: the short name of a known type (RFC 2253's and Go's), else the dotted OID with
/// the value's DER in hex (`1.2.3=#0c03616263`).
fn attribute(atv: &AttributeTypeAndValue<'_>) -> String {
    let oid = atv.attr_type().to_id_string();
    let short = match oid.as_str() {
        "2.5.4.3" => Some("CN"),
        "2.5.4.5" => Some("SERIALNUMBER"),
        "2.5.4.6" => Some("C"),
        "2.5.4.7" => Some("L"),
        "2.5.4.8" => Some("ST"),
        "2.5.4.9" => Some("STREET"),
        "2.5.4.10" => Some("O"),
        "2.5.4.11" => Some("OU"),
        "2.5.4.17" => Some("POSTALCODE"),
        "0.9.2342.19200300.100.1.1" => Some("UID"),
        "0.9.2342.19200300.100.1.25" => Some("DC"),
        _ => None,
    };
    match (short, atv.as_str()) {
        (Some(short), Ok(value)) => format!("{short}={}", escape(value)),
        _ => {
            use x509_parser::asn1_rs::ToDer;
            let der = atv.attr_value().to_der_vec().unwrap_or_default();
            let hex: String = der.iter().map(|b| format!("{b:02x}")).collect();
            format!("{oid}=#{hex}")
        }
    }
}

/// Escapes a value as RFC 2253 says: `,+"\<>;` anywhere, `#` or a space first, a space last.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_der(params: rcgen::CertificateParams) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_subject_reads_in_rfc_2253_form_most_specific_first() {
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CountryName, "US");
        dn.push(rcgen::DnType::OrganizationName, "Acme, Inc.");
        dn.push(rcgen::DnType::OrganizationalUnitName, "#ops ");
        dn.push(rcgen::DnType::CommonName, "alice");
        params.distinguished_name = dn;
        let identity = CertIdentity::from_der(&cert_der(params)).unwrap();
        assert_eq!(identity.subject, r"CN=alice,OU=\#ops\ ,O=Acme\, Inc.,C=US");
        assert!(identity.emails.is_empty() && identity.dns_names.is_empty());
    }

    #[test]
    fn names_come_in_nats_server_order_emails_dns_uris_subject() {
        let mut params = rcgen::CertificateParams::new(vec!["alice.example".into()]).unwrap();
        params.subject_alt_names.push(rcgen::SanType::Rfc822Name(
            "alice@example.com".try_into().unwrap(),
        ));
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://example/alice".try_into().unwrap(),
        ));
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        let identity = CertIdentity::from_der(&cert_der(params)).unwrap();
        let names: Vec<&str> = identity.names().collect();
        assert_eq!(
            names,
            [
                "alice@example.com",
                "alice.example",
                "spiffe://example/alice",
                "CN=alice"
            ]
        );
    }

    #[test]
    fn unknown_attribute_types_read_as_dotted_oid_and_hex() {
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(
            rcgen::DnType::CustomDnType(vec![1, 2, 3, 4]),
            rcgen::DnValue::Utf8String("abc".into()),
        );
        params.distinguished_name = dn;
        let identity = CertIdentity::from_der(&cert_der(params)).unwrap();
        assert_eq!(identity.subject, "1.2.3.4=#0c03616263");
    }

    #[test]
    fn a_certificate_is_the_first_user_without_a_secret_its_names_name() {
        use crate::server::auth::{Refusal, Rules, UserConfig, Users};
        let user = |name: &str, token: Option<&str>| UserConfig {
            name: name.into(),
            password: None,
            token: token.map(str::to_string),
            max_connections: None,
            publish: Rules::default(),
            subscribe: Rules::default(),
        };
        let users = Users::new(&[
            user("CN=alice", None),
            user("alice.example", None),
            user("alice@example.com", Some("$2b$04$unused")),
        ]);
        let identity = CertIdentity {
            emails: vec!["alice@example.com".into()],
            dns_names: vec!["alice.example".into()],
            uris: Vec::new(),
            subject: "CN=alice".into(),
        };
        // The e-mail's user has a token: only its token proves it. The DNS name comes next.
        let found = users.authenticate_certificate(&identity).unwrap();
        assert_eq!(found.name, "alice.example");
        found.release();
        let subject_only = CertIdentity {
            subject: "CN=alice".into(),
            ..CertIdentity::default()
        };
        let found = users.authenticate_certificate(&subject_only).unwrap();
        assert_eq!(found.name, "CN=alice");
        found.release();
        let stranger = CertIdentity {
            subject: "CN=mallory".into(),
            ..CertIdentity::default()
        };
        assert_eq!(
            users.authenticate_certificate(&stranger).err(),
            Some(Refusal::UnknownCertificate)
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(CertIdentity::from_der(b"not a certificate").is_err());
    }
}
