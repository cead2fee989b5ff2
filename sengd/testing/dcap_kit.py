"""A test stand-in for Intel's DCAP PKI, a platform that quotes, and DCAP RA-TLS attesters.

- `DcapTestPki`: our own "SGX Root CA" (EC P-256, like Intel's), PCK Processor and Platform
  CAs, a TCB Signing certificate, and what they sign: TCB infos, QE identities (PCS body form,
  raw r||s hex signature over the exact inner bytes), Root CA and PCK CRLs.
- `DcapPlatform`: one SGX platform: a PCK certificate with the SGX extension (FMSPC, PCE id,
  CPUSVN components, PCESVN), a quoting enclave with its attestation key, producing quotes v3
  with certification data type 5 (PCK chain) or 3 (encrypted PPID, PCK from collateral).
- `mint_gramine_certificate()` / `mint_sgx_ra_tls_certificate()`: RA-TLS client certificates
  in both DCAP forms, with the key bound in report_data as each form defines it, and switches
  for broken variants.
- `PccsStandIn`: a real HTTPS server on loopback answering the PCS v4 requests of
  `sengd.attestation.pccs` from recorded or minted collateral (a test double for the network,
  not a mock of the client).

Verify kit material with `pki.trust()`, never with Intel's root. The daemon never imports this.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import secrets
import ssl
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, Literal, Unpack

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from sengd.attestation.collateral import FILES, RawCollateral
from sengd.attestation.dcap_quote import (
    CERT_DATA_PCK_CHAIN,
    CERT_DATA_PPID_CLEARTEXT,
    CERT_DATA_PPID_RSA3072,
    build_dcap_quote,
    build_report_body,
    quote_header,
)
from sengd.attestation.dcap_ratls import (
    OID_PCK_CERT,
    OID_PCK_CHAIN,
    OID_PCK_CRL,
    OID_QE_IDENTITY,
    OID_QUOTE,
    OID_ROOT_CRL,
    OID_TCB_CHAIN,
    OID_TCB_INFO,
)
from sengd.attestation.pck import PckExtensions, encode_sgx_extension
from sengd.attestation.trust import TrustConfig, TrustOptions, sgx_roots_from_pem
from sengd.attestation.x509chain import SGX_EXTENSION_OID
from sengd.testing.attestation_kit import (
    DEFAULT_MR_ENCLAVE,
    DEFAULT_MR_SIGNER,
    PRODUCTION_FLAGS,
    KeyType,
    MintedCertificate,
    PrivateKey,
    SignedReport,
    generate_key,
    key_type_of,
    public_key_bits,
)

QE_MR_SIGNER = bytes.fromhex("8c4f5775d796503e96137f77c68a829a0056ac8ded70140b081b094490c57bff")
"""Intel's quoting enclave signer (the kit's QE claims it; its QE identity names it)."""
QE_MR_ENCLAVE = hashlib.sha256(b"seng-gateway test quoting enclave").digest()
QE_FLAGS = 0x15  # INIT | MODE64BIT | PROVISION_KEY
QE_XFRM = 0xE7
DEFAULT_FMSPC = bytes.fromhex("00a067110000")
DEFAULT_COMPONENTS = (11, 11, 2, 2, 255, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
DEFAULT_PCESVN = 13
GRAMINE_SUBJECT = x509.Name(
    [
        x509.NameAttribute(NameOID.COMMON_NAME, "RATLS"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "GramineDevelopers"),
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
    ]
)
SGX_RA_TLS_SUBJECT = x509.Name(
    [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "OR"),
        x509.NameAttribute(NameOID.LOCALITY_NAME, "Hillsboro"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Intel Inc."),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Intel Labs"),
        x509.NameAttribute(NameOID.COMMON_NAME, "SGX rocks!"),
    ]
)
_P256 = ec.SECP256R1()


def _name(common_name: str) -> x509.Name:
    # Intel's attribute order (CN first), with our own organisation.
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "seng-gateway tests"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        ]
    )


def _key_usage(*, sign: bool = False, ca: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=sign,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def raw_signature(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA P-256 / SHA-256 as DCAP encodes it: r || s, 32 bytes each."""
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def pem(cert: x509.Certificate) -> bytes:
    """A certificate as PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def iso(moment: datetime) -> str:
    """Intel's time format."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- collateral documents ---------------------------------------------------------------------


@dataclass(frozen=True)
class Level:
    """One TCB level of a TCB info (or, with `isv_svn`, of a QE identity)."""

    status: str = "UpToDate"
    components: tuple[int, ...] = DEFAULT_COMPONENTS
    pce_svn: int = DEFAULT_PCESVN
    isv_svn: int = 8
    advisory_ids: tuple[str, ...] = ()
    tcb_date: datetime = datetime(2024, 3, 13, tzinfo=UTC)


def tcb_info_document(
    *,
    fmspc: bytes = DEFAULT_FMSPC,
    pce_id: bytes = bytes(2),
    levels: Sequence[Level] = (Level(),),
    issue_date: datetime,
    next_update: datetime,
    evaluation_number: int = 17,
    version: int = 3,
) -> dict[str, Any]:
    """A TCB info object of version 3 (or 2), as PCS publishes it."""
    doc: dict[str, Any] = {}
    if version >= 3:
        doc["id"] = "SGX"
    doc.update(
        version=version,
        issueDate=iso(issue_date),
        nextUpdate=iso(next_update),
        fmspc=fmspc.hex().upper(),
        pceId=pce_id.hex().upper(),
        tcbType=0,
        tcbEvaluationDataNumber=evaluation_number,
    )
    out = []
    for level in levels:
        if version >= 3:
            tcb: dict[str, Any] = {"sgxtcbcomponents": [{"svn": c} for c in level.components]}
        else:
            tcb = {f"sgxtcbcomp{n:02d}svn": c for n, c in enumerate(level.components, start=1)}
        tcb["pcesvn"] = level.pce_svn
        item: dict[str, Any] = {
            "tcb": tcb,
            "tcbDate": iso(level.tcb_date),
            "tcbStatus": level.status,
        }
        if level.advisory_ids and version >= 3:
            item["advisoryIDs"] = list(level.advisory_ids)
        out.append(item)
    doc["tcbLevels"] = out
    return doc


def qe_identity_document(
    *,
    issue_date: datetime,
    next_update: datetime,
    levels: Sequence[Level] = (Level(isv_svn=8), Level(status="OutOfDate", isv_svn=6)),
    mr_signer: bytes = QE_MR_SIGNER,
    isv_prod_id: int = 1,
    miscselect: str = "00000000",
    miscselect_mask: str = "FFFFFFFF",
    attributes: str = "11000000000000000000000000000000",
    attributes_mask: str = "FBFFFFFFFFFFFFFF0000000000000000",
    evaluation_number: int = 17,
) -> dict[str, Any]:
    """A QE identity (version 2, id QE), as PCS publishes it."""
    return {
        "id": "QE",
        "version": 2,
        "issueDate": iso(issue_date),
        "nextUpdate": iso(next_update),
        "tcbEvaluationDataNumber": evaluation_number,
        "miscselect": miscselect,
        "miscselectMask": miscselect_mask,
        "attributes": attributes,
        "attributesMask": attributes_mask,
        "mrsigner": mr_signer.hex().upper(),
        "isvprodid": isv_prod_id,
        "tcbLevels": [
            {
                "tcb": {"isvsvn": level.isv_svn},
                "tcbDate": iso(level.tcb_date),
                "tcbStatus": level.status,
                **({"advisoryIDs": list(level.advisory_ids)} if level.advisory_ids else {}),
            }
            for level in levels
        ],
    }


# -- the PKI ----------------------------------------------------------------------------------


@dataclass
class DcapTestPki:
    """Our own SGX PKI: root, PCK Processor/Platform CAs, TCB Signing. Build once per session."""

    __test__ = False

    root_key: ec.EllipticCurvePrivateKey
    root_cert: x509.Certificate
    processor_key: ec.EllipticCurvePrivateKey
    processor_cert: x509.Certificate
    platform_key: ec.EllipticCurvePrivateKey
    platform_cert: x509.Certificate
    tcb_key: ec.EllipticCurvePrivateKey
    tcb_cert: x509.Certificate

    @classmethod
    def create(
        cls,
        *,
        not_before: datetime = datetime(2018, 5, 21, tzinfo=UTC),
        not_after: datetime = datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC),
        root_name: str = "Test SGX Root CA",
    ) -> DcapTestPki:
        """Generate the whole PKI (P-256 keys, Intel's shape: root pathlen 1, CAs pathlen 0)."""
        root_key = ec.generate_private_key(_P256)
        name = _name(root_name)
        root = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .sign(root_key, hashes.SHA256())
        )
        keys = [ec.generate_private_key(_P256) for _ in range(3)]
        pki = cls(root_key, root, keys[0], root, keys[1], root, keys[2], root)
        pki.processor_cert = pki.issue_ca(
            "Test SGX PCK Processor CA", keys[0], not_before, not_after
        )
        pki.platform_cert = pki.issue_ca("Test SGX PCK Platform CA", keys[1], not_before, not_after)
        pki.tcb_cert = pki.issue_tcb_signing(keys[2], not_before, not_after)
        return pki

    def issue_ca(
        self, name: str, key: ec.EllipticCurvePrivateKey, not_before: datetime, not_after: datetime
    ) -> x509.Certificate:
        """An intermediate CA under the root (CA:TRUE, pathlen 0, keyCertSign + cRLSign)."""
        return (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.root_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .sign(self.root_key, hashes.SHA256())
        )

    def issue_tcb_signing(
        self,
        key: ec.EllipticCurvePrivateKey,
        not_before: datetime,
        not_after: datetime,
        *,
        serial: int | None = None,
    ) -> x509.Certificate:
        """A TCB Signing certificate under the root (end entity)."""
        return (
            x509.CertificateBuilder()
            .subject_name(_name("Test SGX TCB Signing"))
            .issuer_name(self.root_cert.subject)
            .public_key(key.public_key())
            .serial_number(serial or x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(sign=True), critical=True)
            .sign(self.root_key, hashes.SHA256())
        )

    # -- trust and chains ---------------------------------------------------------------------

    @property
    def root_pem(self) -> bytes:
        """The root certificate (what `sgx_root_ca` would name)."""
        return pem(self.root_cert)

    def trust(self, **options: Unpack[TrustOptions]) -> TrustConfig:
        """A `TrustConfig` whose only SGX root is this PKI's (and Intel's IAS root for EPID)."""
        options.setdefault("sgx_roots", sgx_roots_from_pem(self.root_pem, "<test SGX root>"))
        return TrustConfig.builtin(**options)

    @property
    def tcb_chain_pem(self) -> bytes:
        """The TCB info / QE identity issuer chain: TCB Signing, then the root."""
        return pem(self.tcb_cert) + self.root_pem

    def ca(self, kind: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """The PCK CA of `kind` ("processor" or "platform")."""
        if kind == "processor":
            return self.processor_key, self.processor_cert
        if kind == "platform":
            return self.platform_key, self.platform_cert
        raise ValueError(f"unknown PCK CA {kind!r}")

    def ca_chain_pem(self, kind: str = "processor") -> bytes:
        """A PCK CA and the root (the PCK CRL issuer chain)."""
        return pem(self.ca(kind)[1]) + self.root_pem

    # -- signed collateral --------------------------------------------------------------------

    def sign_body(
        self,
        name: str,
        document: Mapping[str, Any],
        *,
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> bytes:
        """A PCS body `{"<name>":<document>,"signature":"<hex r||s>"}` signed by TCB Signing."""
        inner = json.dumps(document, separators=(",", ":")).encode()
        signature = raw_signature(key or self.tcb_key, inner).hex()
        return (
            b'{"' + name.encode() + b'":' + inner + b',"signature":"' + signature.encode() + b'"}'
        )

    def root_crl(
        self,
        *,
        this_update: datetime,
        next_update: datetime,
        revoked: Iterable[int] = (),
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> bytes:
        """The Root CA CRL (DER)."""
        return self._crl(self.root_cert, key or self.root_key, this_update, next_update, revoked)

    def pck_crl(
        self,
        *,
        this_update: datetime,
        next_update: datetime,
        revoked: Iterable[int] = (),
        ca: str = "processor",
    ) -> bytes:
        """The CRL of a PCK CA (DER)."""
        key, cert = self.ca(ca)
        return self._crl(cert, key, this_update, next_update, revoked)

    @staticmethod
    def _crl(
        issuer: x509.Certificate,
        key: ec.EllipticCurvePrivateKey,
        this_update: datetime,
        next_update: datetime,
        revoked: Iterable[int],
    ) -> bytes:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuer.subject)
            .last_update(this_update)
            .next_update(next_update)
        )
        for serial in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(this_update)
                .build()
            )
        crl = builder.sign(key, hashes.SHA256())
        return crl.public_bytes(serialization.Encoding.DER)

    def collateral(
        self,
        *,
        at: datetime,
        fmspc: bytes = DEFAULT_FMSPC,
        levels: Sequence[Level] = (Level(),),
        qe_levels: Sequence[Level] = (Level(isv_svn=8), Level(status="OutOfDate", isv_svn=6)),
        validity: timedelta = timedelta(days=30),
        revoked_pcks: Iterable[int] = (),
        revoked_cas: Iterable[int] = (),
        ca: str = "processor",
        tcb_info_version: int = 3,
        qe_identity: Mapping[str, Any] | None = None,
    ) -> RawCollateral:
        """A complete collateral set issued at `at` (valid for `validity`), PCS formats."""
        issue, until = at, at + validity
        tcb = tcb_info_document(
            fmspc=fmspc,
            levels=levels,
            issue_date=issue,
            next_update=until,
            version=tcb_info_version,
        )
        qe = qe_identity or qe_identity_document(
            issue_date=issue, next_update=until, levels=qe_levels
        )
        return RawCollateral(
            tcb_info=self.sign_body("tcbInfo", tcb),
            tcb_info_issuer_chain=self.tcb_chain_pem,
            qe_identity=self.sign_body("enclaveIdentity", qe),
            qe_identity_issuer_chain=self.tcb_chain_pem,
            root_ca_crl=self.root_crl(this_update=issue, next_update=until, revoked=revoked_cas),
            pck_crl=self.pck_crl(this_update=issue, next_update=until, revoked=revoked_pcks, ca=ca),
            pck_crl_issuer_chain=self.ca_chain_pem(ca),
            source="dcap kit",
        )


def write_collateral_dir(path: Path | str, raw: RawCollateral) -> Path:
    """Write `raw` as a collateral directory (the file names `collateral.py` reads)."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    for attr, filename in FILES.items():
        value = getattr(raw, attr)
        if value is not None:
            (folder / filename).write_bytes(value)
    return folder


# -- a platform and its quoting enclave -------------------------------------------------------


@dataclass
class DcapPlatform:
    """One SGX platform: PCK key and certificate, and a quoting enclave with its keys."""

    __test__ = False

    pki: DcapTestPki
    pck_key: ec.EllipticCurvePrivateKey
    pck_cert: x509.Certificate
    extensions: PckExtensions
    ca: str
    attestation_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(_P256)
    )
    qe_isv_svn: int = 8
    qe_mr_signer: bytes = QE_MR_SIGNER
    qe_isv_prod_id: int = 1
    qe_flags: int = QE_FLAGS
    encrypted_ppid: bytes = field(default_factory=lambda: secrets.token_bytes(384))

    @classmethod
    def create(
        cls,
        pki: DcapTestPki,
        *,
        fmspc: bytes = DEFAULT_FMSPC,
        components: tuple[int, ...] = DEFAULT_COMPONENTS,
        pce_svn: int = DEFAULT_PCESVN,
        pce_id: bytes = bytes(2),
        ca: str = "processor",
        not_before: datetime = datetime(2023, 9, 20, tzinfo=UTC),
        not_after: datetime = datetime(2040, 9, 20, tzinfo=UTC),
        qe_isv_svn: int = 8,
        sgx_extension: bytes | None = None,
    ) -> DcapPlatform:
        """A platform whose PCK certificate (issued by the `ca` PCK CA) certifies this TCB.

        `sgx_extension` replaces the encoded SGX extension value (for broken variants)."""
        ext = PckExtensions(
            ppid=secrets.token_bytes(16),
            tcb_components=components,
            pce_svn=pce_svn,
            cpu_svn=bytes(components),
            pce_id=pce_id,
            fmspc=fmspc,
            sgx_type=0 if ca == "processor" else 1,
            platform_instance_id=None if ca == "processor" else secrets.token_bytes(16),
        )
        pck_key = ec.generate_private_key(_P256)
        ca_key, ca_cert = pki.ca(ca)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("Test SGX PCK Certificate"))
            .issuer_name(ca_cert.subject)
            .public_key(pck_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(sign=True), critical=True)
            .add_extension(
                x509.UnrecognizedExtension(
                    SGX_EXTENSION_OID,
                    encode_sgx_extension(ext) if sgx_extension is None else sgx_extension,
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        return cls(pki, pck_key, cert, ext, ca, qe_isv_svn=qe_isv_svn)

    @property
    def pck_chain_pem(self) -> bytes:
        """PCK certificate, its CA, the root: what a type-5 quote carries."""
        return pem(self.pck_cert) + self.pki.ca_chain_pem(self.ca)

    @property
    def attestation_key_raw(self) -> bytes:
        """The attestation public key as the quote carries it (x || y)."""
        point = self.attestation_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return point[1:]

    def qe_report(self, auth_data: bytes) -> bytes:
        """The QE's report body, binding the attestation key and the authentication data."""
        binding = hashlib.sha256(self.attestation_key_raw + auth_data).digest() + bytes(32)
        return build_report_body(
            mr_enclave=QE_MR_ENCLAVE,
            mr_signer=self.qe_mr_signer,
            report_data=binding,
            isv_prod_id=self.qe_isv_prod_id,
            isv_svn=self.qe_isv_svn,
            flags=self.qe_flags,
            xfrm=QE_XFRM,
            cpu_svn=self.extensions.cpu_svn,
        )

    def quote(
        self,
        *,
        report_data: bytes = bytes(64),
        mr_enclave: bytes = DEFAULT_MR_ENCLAVE,
        mr_signer: bytes = DEFAULT_MR_SIGNER,
        isv_prod_id: int = 0,
        isv_svn: int = 0,
        flags: int = PRODUCTION_FLAGS,
        xfrm: int = 0x3,
        cert_data_type: int = CERT_DATA_PCK_CHAIN,
        sign_with: ec.EllipticCurvePrivateKey | None = None,
        qe_sign_with: ec.EllipticCurvePrivateKey | None = None,
        bind_attestation_key: bool = True,
    ) -> bytes:
        """A quote v3 the platform would produce for an enclave with these properties.

        Broken variants: `sign_with` (another attestation key signs the report),
        `qe_sign_with` (another key than the PCK key signs the QE report),
        `bind_attestation_key=False` (the QE report does not bind the attestation key)."""
        body = build_report_body(
            mr_enclave=mr_enclave,
            mr_signer=mr_signer,
            report_data=report_data,
            isv_prod_id=isv_prod_id,
            isv_svn=isv_svn,
            flags=flags,
            xfrm=xfrm,
            cpu_svn=self.extensions.cpu_svn,
        )
        header = quote_header(
            qe_svn=self.qe_isv_svn,
            pce_svn=self.extensions.pce_svn,
            user_data=hashlib.sha256(self.extensions.ppid).digest()[:16] + bytes(4),
        )
        auth = bytes(range(32))
        qe_body = self.qe_report(auth if bind_attestation_key else b"other authentication data")
        if cert_data_type == CERT_DATA_PCK_CHAIN:
            cert_data = self.pck_chain_pem + b"\0"
        elif cert_data_type == CERT_DATA_PPID_RSA3072:
            cert_data = (
                self.encrypted_ppid
                + self.extensions.cpu_svn
                + self.extensions.pce_svn.to_bytes(2, "little")
                + self.extensions.pce_id
            )
        elif cert_data_type == CERT_DATA_PPID_CLEARTEXT:
            cert_data = (
                self.extensions.ppid
                + self.extensions.cpu_svn
                + self.extensions.pce_svn.to_bytes(2, "little")
            )
        else:
            raise ValueError(
                f"the kit makes certification data of type 5, 3 or 1, not {cert_data_type}"
            )
        return build_dcap_quote(
            report_body=body,
            isv_signature=raw_signature(sign_with or self.attestation_key, header + body),
            attestation_key=self.attestation_key_raw,
            qe_report_body=qe_body,
            qe_report_signature=raw_signature(qe_sign_with or self.pck_key, qe_body),
            qe_auth_data=auth,
            cert_data_type=cert_data_type,
            cert_data=cert_data,
            qe_svn=self.qe_isv_svn,
            pce_svn=self.extensions.pce_svn,
            user_data=hashlib.sha256(self.extensions.ppid).digest()[:16] + bytes(4),
        )

    def pck_collateral(self, *, fetched: bool = False) -> RawCollateral:
        """The PCK certificate chain as collateral (for type-1/3 quotes); `fetched`: as a
        PCCS answer for this platform's encrypted PPID."""
        from sengd.attestation.collateral import ppid_key

        return RawCollateral(
            pck_cert_chain=self.pck_chain_pem,
            source="dcap kit PCK",
            pck_ppid_key=ppid_key(self.encrypted_ppid) if fetched else None,
        )


# -- RA-TLS certificates ----------------------------------------------------------------------

Binding = Literal["form", "wrong", "zero"]


@dataclass(frozen=True)
class DcapCertificate(MintedCertificate):
    """A minted DCAP RA-TLS certificate (the `report` field of the EPID kit stays empty)."""

    form: str = "gramine"
    quote: bytes = b""


def _spki_der(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def report_data_for(form: str, key: PrivateKey, binding: Binding = "form") -> bytes:
    """report_data binding `key` as `form` defines it (or a wrong / zero binding)."""
    if binding == "zero":
        return bytes(64)
    if binding == "wrong":
        return hashlib.sha256(b"another key" + secrets.token_bytes(8)).digest() + bytes(32)
    material = _spki_der(key) if form == "gramine" else public_key_bits(key)
    return hashlib.sha256(material).digest() + bytes(32)


def _build(
    subject: x509.Name,
    key: PrivateKey,
    extensions: Sequence[tuple[x509.ObjectIdentifier, bytes]],
    not_before: datetime,
    not_after: datetime,
    *,
    critical: Iterable[x509.ObjectIdentifier] = (),
    gramine_extras: bool = False,
) -> bytes:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if gramine_extras:  # what ra_tls_attest.c adds
        builder = builder.add_extension(
            x509.BasicConstraints(ca=False, path_length=None), critical=False
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    marked = set(critical)
    for oid, value in extensions:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(oid, value), critical=oid in marked
        )
    cert = builder.sign(key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.DER)


def _times(not_before: datetime | None, not_after: datetime | None) -> tuple[datetime, datetime]:
    start = not_before or (datetime.now(UTC) - timedelta(minutes=1)).replace(microsecond=0)
    return start, not_after or start + timedelta(days=365)


def mint_gramine_certificate(
    platform: DcapPlatform,
    *,
    key_type: KeyType = "ec-p384",
    key: PrivateKey | None = None,
    binding: Binding = "form",
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    quote: bytes | None = None,
    cert_data_type: int = CERT_DATA_PCK_CHAIN,
    extra_extensions: Sequence[tuple[x509.ObjectIdentifier, bytes]] = (),
    critical: Iterable[x509.ObjectIdentifier] = (),
    **enclave: Any,
) -> DcapCertificate:
    """A Gramine-form RA-TLS certificate: the quote in .6 only, report_data[0:32] =
    SHA-256(DER SubjectPublicKeyInfo). `enclave` goes to `DcapPlatform.quote()`."""
    key = key or generate_key(key_type)
    start, end = _times(not_before, not_after)
    if quote is None:
        report_data = report_data_for("gramine", key, binding)
        quote = platform.quote(report_data=report_data, cert_data_type=cert_data_type, **enclave)
    der = _build(
        GRAMINE_SUBJECT,
        key,
        [(OID_QUOTE, quote), *extra_extensions],
        start,
        end,
        critical=critical,
        gramine_extras=True,
    )
    return DcapCertificate(
        der, key, key_type_of(key), SignedReport(b"", b"", b""), quote[:432], "gramine", quote
    )


def _urlencode(data: bytes) -> bytes:
    return urllib.parse.quote_from_bytes(data, safe="").encode()


def mint_sgx_ra_tls_certificate(
    platform: DcapPlatform,
    collateral: RawCollateral,
    *,
    key_type: KeyType = "rsa-3072",
    key: PrivateKey | None = None,
    binding: Binding = "form",
    cert_data_type: int = CERT_DATA_PPID_RSA3072,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    url_encode_chains: bool = True,
    omit: Iterable[int] = (),
    quote: bytes | None = None,
    **enclave: Any,
) -> DcapCertificate:
    """An sgx-ra-tls ECDSA-form certificate: quote (.6), PCK certificate and chain (.7/.8),
    TCB info and signing chain (.9/.10), QE identity (.11), CRLs as PEM (.12/.13);
    report_data[0:32] = SHA-256(SPKI BIT STRING contents). `omit` drops extensions by number."""
    key = key or generate_key(key_type)
    start, end = _times(not_before, not_after)
    if quote is None:
        report_data = report_data_for("sgx-ra-tls", key, binding)
        quote = platform.quote(report_data=report_data, cert_data_type=cert_data_type, **enclave)

    def chain(value: bytes) -> bytes:
        return _urlencode(value) if url_encode_chains else value

    def crl_pem(der: bytes | None) -> bytes | None:
        if der is None:
            return None
        crl = x509.load_der_x509_crl(der)
        return crl.public_bytes(serialization.Encoding.PEM)

    values: dict[int, bytes | None] = {
        6: quote,
        7: pem(platform.pck_cert),
        8: chain(platform.pki.ca_chain_pem(platform.ca)),
        9: collateral.tcb_info,
        10: None
        if collateral.tcb_info_issuer_chain is None
        else chain(collateral.tcb_info_issuer_chain),
        11: collateral.qe_identity,
        12: crl_pem(collateral.root_ca_crl),
        13: crl_pem(collateral.pck_crl),
    }
    oids = {
        6: OID_QUOTE,
        7: OID_PCK_CERT,
        8: OID_PCK_CHAIN,
        9: OID_TCB_INFO,
        10: OID_TCB_CHAIN,
        11: OID_QE_IDENTITY,
        12: OID_ROOT_CRL,
        13: OID_PCK_CRL,
    }
    dropped = set(omit)
    exts = [(oids[n], v) for n, v in values.items() if v is not None and n not in dropped]
    der = _build(SGX_RA_TLS_SUBJECT, key, exts, start, end)
    return DcapCertificate(
        der, key, key_type_of(key), SignedReport(b"", b"", b""), quote[:432], "sgx-ra-tls", quote
    )


# -- a PCCS on loopback -----------------------------------------------------------------------


@dataclass
class PccsStandIn:
    """A real HTTPS server (thread) answering PCS v4 requests from collateral it is given.

    `tcb` maps FMSPC -> (body, issuer chain); `pck_certs` maps encrypted PPID -> PCK chain
    PEM (leaf first); the PCK CRL is served for `pck_crl_ca` ("processor" or "platform").
    `requests` records each request (path and query); `available` = False
    answers 503; `delay` seconds pass before each answer.
    Use as a context manager; `url` is the base URL and `ca_pem` its self-signed certificate.
    """

    __test__ = False

    collateral: RawCollateral
    tcb: dict[bytes, tuple[bytes, bytes]] = field(default_factory=dict)
    pck_certs: dict[bytes, bytes] = field(default_factory=dict)
    hex_root_crl: bool = True
    pck_crl_ca: str = "processor"
    available: bool = True
    delay: float = 0.0
    requests: list[str] = field(default_factory=list)
    ca_pem: bytes = b""
    url: str = ""
    _server: http.server.ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _dir: tempfile.TemporaryDirectory[str] | None = None

    @classmethod
    def serving(cls, *sets: RawCollateral, **kwargs: Any) -> PccsStandIn:
        """A stand-in for these collateral sets (TCB infos by their FMSPC; the first set's
        QE identity and CRLs)."""
        from sengd.attestation.signed_json import parse_signed_body

        tcb = {}
        for raw in sets:
            if raw.tcb_info is not None and raw.tcb_info_issuer_chain is not None:
                doc = parse_signed_body(raw.tcb_info, ("tcbInfo",)).document
                tcb[bytes.fromhex(doc["fmspc"])] = (raw.tcb_info, raw.tcb_info_issuer_chain)
        return cls(sets[0], tcb=tcb, **kwargs)

    def __enter__(self) -> PccsStandIn:
        self._dir = tempfile.TemporaryDirectory(prefix="pccs-standin-")
        cert_path, key_path = _self_signed_tls(Path(self._dir.name))
        self.ca_pem = cert_path.read_bytes()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stand_in.handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self.url = f"https://127.0.0.1:{server.server_address[1]}/sgx/certification/v4"
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._dir is not None:
            self._dir.cleanup()

    def _reply(
        self, handler: http.server.BaseHTTPRequestHandler, body: bytes, headers: Mapping[str, bytes]
    ) -> None:
        handler.send_response(200)
        for name, value in headers.items():
            handler.send_header(name, _urlencode(value).decode())
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def handle(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        """Answer one GET like PCS v4 would."""
        url = urllib.parse.urlsplit(handler.path)
        params = dict(urllib.parse.parse_qsl(url.query))
        path = url.path.removeprefix("/sgx/certification/v4/")
        self.requests.append(handler.path.removeprefix("/sgx/certification/v4/"))
        if self.delay:
            time.sleep(self.delay)
        raw = self.collateral
        answer: tuple[bytes, dict[str, bytes]] | None = None
        if not self.available:
            answer = None
        elif path == "tcb":
            found = self.tcb.get(bytes.fromhex(params.get("fmspc", "")))
            if found is not None:
                answer = (found[0], {"TCB-Info-Issuer-Chain": found[1]})
        elif path == "qe/identity" and raw.qe_identity and raw.qe_identity_issuer_chain:
            answer = (
                raw.qe_identity,
                {"SGX-Enclave-Identity-Issuer-Chain": raw.qe_identity_issuer_chain},
            )
        elif path == "rootcacrl" and raw.root_ca_crl:
            body = raw.root_ca_crl.hex().encode() if self.hex_root_crl else raw.root_ca_crl
            answer = (body, {})
        elif (
            path == "pckcrl"
            and params.get("ca") == self.pck_crl_ca
            and raw.pck_crl
            and raw.pck_crl_issuer_chain
        ):
            answer = (raw.pck_crl, {"SGX-PCK-CRL-Issuer-Chain": raw.pck_crl_issuer_chain})
        elif path == "pckcert":
            chain = self.pck_certs.get(bytes.fromhex(params.get("encrypted_ppid", "")))
            if chain is not None:
                leaf, _, rest = chain.partition(b"-----END CERTIFICATE-----\n")
                answer = (
                    leaf + b"-----END CERTIFICATE-----\n",
                    {"SGX-PCK-Certificate-Issuer-Chain": rest},
                )
        if answer is None:
            handler.send_error(404 if self.available else 503)
            return
        self._reply(handler, *answer)


def _self_signed_tls(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(_P256)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pccs stand-in")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "pccs.crt", folder / "pccs.key"
    cert_path.write_bytes(pem(cert))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


__all__ = [
    "DEFAULT_COMPONENTS",
    "DEFAULT_FMSPC",
    "DcapCertificate",
    "DcapPlatform",
    "DcapTestPki",
    "Level",
    "PccsStandIn",
    "mint_gramine_certificate",
    "mint_sgx_ra_tls_certificate",
    "qe_identity_document",
    "raw_signature",
    "report_data_for",
    "tcb_info_document",
    "write_collateral_dir",
]
