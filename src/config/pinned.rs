//! Server certificate verification for sites with a `ca` file: the usual WebPKI chain
//! check, plus one case operators rely on: the `ca` file holds the site's own
//! self-signed certificate (as `openssl req -x509` makes, with CA:TRUE). WebPKI refuses
//! a CA certificate as an end entity; curl and OpenSSL accept the exact certificate
//! they were told to trust, and so does splitgate, still checking the name.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};

#[derive(Debug)]
pub struct PinnedOrWebPki {
    webpki: Arc<WebPkiServerVerifier>,
    /// The certificates of the `ca` file, trusted as they are when presented.
    pinned: Vec<CertificateDer<'static>>,
}

impl PinnedOrWebPki {
    pub fn new(webpki: Arc<WebPkiServerVerifier>, pinned: Vec<CertificateDer<'static>>) -> Self {
        PinnedOrWebPki { webpki, pinned }
    }
}

impl ServerCertVerifier for PinnedOrWebPki {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let chained = self
            .webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
        match chained {
            Err(_) if self.pinned.iter().any(|p| p.as_ref() == end_entity.as_ref()) => {
                let cert = webpki::EndEntityCert::try_from(end_entity)
                    .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
                cert.verify_is_valid_for_subject_name(server_name)
                    .map_err(|_| Error::InvalidCertificate(CertificateError::NotValidForName))?;
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
