"""The Maros referral flow, played by agency systems written in Python.

A village Puskesos refers a poor family to Dinas Sosial's SLRT; UPTD PPA refers a child
victim of sexual violence to Polres Maros Unit PPA and to Bagian Hukum. Each agency's system
talks gRPC to its own refbus adapter, with stubs generated from proto/ when this script starts,
exactly as an agency's IT staff would do.

Every agency's system calls its adapter over mutual TLS: it verifies the adapter with the
deployment's CA and presents its own client certificate (refbus://<agency>/<system>).

Usage: maros_flow.py --proto DIR --cacert FILE
                     --adapter AGENCY=HOST:PORT,CERT_FILE,KEY_FILE [--adapter ...]
Exits 0 when every step behaved as the contract says; prints what went wrong otherwise.
"""

import argparse
import importlib
import importlib.resources
import sys
import tempfile
import uuid

import grpc
from grpc_tools import protoc


def generate_stubs(proto_dir: str, out_dir: str) -> None:
    """Compiles proto/refbus/v1/*.proto into Python modules under out_dir."""
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    sources = ["refbus/v1/referral.proto", "refbus/v1/referral_service.proto"]
    status = protoc.main(
        ["protoc", f"-I{proto_dir}", f"-I{well_known}", f"--python_out={out_dir}",
         f"--grpc_python_out={out_dir}", *sources]
    )
    if status != 0:
        raise SystemExit(f"protoc failed with status {status}")


class Agency:
    """One agency's IT system: a stub of its adapter and the operator who acts."""

    def __init__(self, pb, stubs, agency: str, target: str, credentials, operator: str):
        self.pb = pb
        self.agency = agency
        self.stub = stubs.ReferralServiceStub(grpc.secure_channel(target, credentials))
        self.metadata = (("x-refbus-operator", operator),)

    def call(self, method: str, **fields):
        request_type = getattr(self.pb, f"{method}Request")
        if "request_id" in request_type.DESCRIPTOR.fields_by_name and "request_id" not in fields:
            fields["request_id"] = str(uuid.uuid4())
        return getattr(self.stub, method)(request_type(**fields), metadata=self.metadata, timeout=10)

    def inbox(self, count: int, cursor: str = ""):
        items = []
        stream = self.stub.WatchInbox(self.pb.WatchInboxRequest(cursor=cursor), metadata=self.metadata, timeout=10)
        for response in stream:
            items.append(response.item)
            if len(items) == count:
                stream.cancel()
                break
        return items


def read(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--proto", required=True)
    parser.add_argument("--cacert", required=True, help="the CA that issued the adapters' certificate")
    parser.add_argument("--adapter", action="append", required=True, help="AGENCY=HOST:PORT,CERT_FILE,KEY_FILE")
    args = parser.parse_args()
    ca = read(args.cacert)

    out_dir = tempfile.mkdtemp(prefix="refbus-python-stubs-")
    generate_stubs(args.proto, out_dir)
    sys.path.insert(0, out_dir)
    common = importlib.import_module("refbus.v1.referral_pb2")
    service = importlib.import_module("refbus.v1.referral_service_pb2")
    stubs = importlib.import_module("refbus.v1.referral_service_pb2_grpc")

    class Pb:
        """Messages of both files under one name, as generated code is used."""

        def __getattr__(self, name):
            return getattr(service, name, None) or getattr(common, name)

    pb = Pb()
    adapters = {}
    for item in args.adapter:
        name, rest = item.split("=", 1)
        target, cert, key = rest.split(",")
        adapters[name] = (target, cert, key)
    agency = {
        name: Agency(pb, stubs, name, target,
                     grpc.ssl_channel_credentials(root_certificates=ca, private_key=read(key),
                                                  certificate_chain=read(cert)),
                     f"py-operator@{name}")
        for name, (target, cert, key) in adapters.items()
    }
    puskesos, dinsos = agency["puskesos-bontoa"], agency["maros-dinsos"]
    uptd, polres, hukum = agency["maros-uptd-ppa"], agency["polres-maros"], agency["maros-bagian-hukum"]

    # 1. The Puskesos refers a poor family to Dinsos SLRT for social assistance.
    family = pb.ClientIdentity(full_name="Bapak Contoh Keluarga", nik="7309010101800001",
                               address="Desa Bontoa, Kecamatan Bontoa", phone="+62-813-0000-1111")
    created = puskesos.call(
        "CreateReferral", recipient="maros-dinsos", case_id="BTA-2026-007", service="social_assistance",
        priority=pb.PRIORITY_ROUTINE, categories=["poverty"], child=False,
        consent=pb.Consent(services=True, disclose_to_agencies=True), identity=family,
        sex=pb.SEX_MALE, age_band=pb.AGE_BAND_25_TO_59,
        note="Keluarga lima orang, kepala keluarga sakit, belum terdaftar DTKS")
    family_referral = created.referral.referral_id
    # Sex and age band are statistical metadata in the clear (the identity gives no birth date
    # here, so the system states the band; everything identifying stays sealed).
    expect((created.referral.sex, created.referral.age_band) == (pb.SEX_MALE, pb.AGE_BAND_25_TO_59),
           f"the referral records its statistical metadata: {created.referral.sex}, {created.referral.age_band}")
    expect(created.referral.status == pb.REFERRAL_STATUS_REQUESTED, "a new referral is requested")
    expect(created.event.author_system == "python",
           f"the event records the system the certificate names: {created.event.author_system!r}")

    # Dinsos's system takes it from its inbox, reads the family's identity, and accepts.
    items = dinsos.inbox(1)
    expect(items[0].event.referral_id == family_referral, "Dinsos's inbox shows the referral")
    expect(items[0].event.created.identity.full_name == "Bapak Contoh Keluarga", "Dinsos reads the identity")
    dinsos.call("ConfirmReceipt", referral_id=family_referral)
    accepted = dinsos.call("AcceptReferral", referral_id=family_referral)
    expect(accepted.referral.status == pb.REFERRAL_STATUS_ACCEPTED, "Dinsos accepted")

    # 2. UPTD PPA refers a child victim of sexual violence to the police and to Bagian Hukum.
    child = pb.ClientIdentity(full_name="Anak Contoh Korban", nik="7309014503120002", birth_date="2012-03-05",
                              sex=pb.SEX_FEMALE, guardian_name="Ibu Contoh Wali",
                              narrative="Korban melapor ke UPTD PPA bersama ibunya")
    consent = pb.Consent(services=True, disclose_to_agencies=True)
    police = uptd.call(
        "CreateReferral", recipient="polres-maros", case_id="UPTD-2026-019", service="police_report",
        priority=pb.PRIORITY_URGENT, categories=["sexual_violence"], child=True, consent=consent, identity=child)
    legal = uptd.call(
        "CreateReferral", recipient="maros-bagian-hukum", case_id="UPTD-2026-019", service="legal_aid",
        priority=pb.PRIORITY_URGENT, categories=["sexual_violence"], child=True, consent=consent, identity=child)
    # Left unset, sex and age band come from the identity (born 2012-03-05: 13-17 in 2026).
    expect((police.referral.sex, police.referral.age_band) == (pb.SEX_FEMALE, pb.AGE_BAND_13_TO_17),
           f"the adapter derives the metadata from the identity: {police.referral.sex}, {police.referral.age_band}")
    clocks = {clock.clock_id for clock in police.referral.clocks}
    expect("tpks_pasal_41" in clocks, f"the police referral runs the UU TPKS Pasal 41 clock: {clocks}")

    polres.call("AcceptReferral", referral_id=police.referral.referral_id)
    started = polres.call("StartReferral", referral_id=police.referral.referral_id)
    expect(started.referral.status == pb.REFERRAL_STATUS_IN_PROGRESS, "the police started")
    hukum.call("AcceptReferral", referral_id=legal.referral.referral_id)
    hukum.call("AddNote", referral_id=legal.referral.referral_id, note="Pendampingan hukum dijadwalkan Senin")

    # UPTD PPA's inbox: its two referrals created, then the answers, the note opened for it.
    seen = uptd.inbox(6)
    kinds = [item.event.WhichOneof("change") for item in seen]
    expect(kinds.count("created") == 2 and kinds.count("accepted") == 2, f"UPTD PPA saw its referrals answered: {kinds}")
    notes = [item.event.note_added.note for item in seen if item.event.WhichOneof("change") == "note_added"]
    expect(notes == ["Pendampingan hukum dijadwalkan Senin"], f"UPTD PPA reads the note: {notes}")

    # 3. The contract's errors reach a Python client as the documented status codes.
    try:
        polres.call("AcceptReferral", referral_id=police.referral.referral_id)
        raise AssertionError("accepting twice must fail")
    except grpc.RpcError as error:
        expect(error.code() == grpc.StatusCode.FAILED_PRECONDITION, f"accepting twice: {error.code()}")
    try:
        puskesos.call("CreateReferral", recipient="maros-dinsos", case_id="BTA-2026-008", service="social_assistance",
                      priority=pb.PRIORITY_ROUTINE, consent=pb.Consent(services=False))
        raise AssertionError("a referral without consent must fail")
    except grpc.RpcError as error:
        expect(error.code() == grpc.StatusCode.INVALID_ARGUMENT, f"no consent: {error.code()}")
        expect("consent.services" in error.details(), f"the field is named: {error.details()}")
    try:
        uptd.call("CreateReferral", recipient="polres-maros", case_id="UPTD-2026-020", service="police_report",
                  priority=pb.PRIORITY_URGENT, categories=["sexual_violence"], child=True, consent=consent,
                  identity=child, age_band=pb.AGE_BAND_18_TO_24)
        raise AssertionError("an age band the birth date contradicts must fail")
    except grpc.RpcError as error:
        expect(error.code() == grpc.StatusCode.INVALID_ARGUMENT, f"contradicting band: {error.code()}")
        expect(error.details().startswith("age_band: "), f"the field is named: {error.details()}")
        expect("2012" not in error.details(), f"the birth date is not quoted: {error.details()}")
    try:
        hukum.call("GetReferral", referral_id=family_referral)
        raise AssertionError("Bagian Hukum must not read the family's referral")
    except grpc.RpcError as error:
        # Answered as an unknown id: a non-party must not learn that the referral exists.
        expect(error.code() == grpc.StatusCode.NOT_FOUND, f"not a party: {error.code()}")

    # 4. Without a client certificate the adapter answers UNAUTHENTICATED, and with another
    #    agency's certificate PERMISSION_DENIED.
    anonymous = Agency(pb, stubs, "maros-dinsos", adapters["maros-dinsos"][0],
                       grpc.ssl_channel_credentials(root_certificates=ca), "py-anonymous")
    try:
        anonymous.call("GetReferral", referral_id=family_referral)
        raise AssertionError("a call without a client certificate must fail")
    except grpc.RpcError as error:
        expect(error.code() == grpc.StatusCode.UNAUTHENTICATED, f"no certificate: {error.code()}")
    _, cert, key = adapters["polres-maros"]
    impostor = Agency(pb, stubs, "maros-dinsos", adapters["maros-dinsos"][0],
                      grpc.ssl_channel_credentials(root_certificates=ca, private_key=read(key),
                                                   certificate_chain=read(cert)), "py-impostor")
    try:
        impostor.call("GetReferral", referral_id=family_referral)
        raise AssertionError("another agency's certificate must be refused")
    except grpc.RpcError as error:
        expect(error.code() == grpc.StatusCode.PERMISSION_DENIED, f"another agency: {error.code()}")

    print("maros flow: ok", family_referral, police.referral.referral_id, legal.referral.referral_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
