/*
** venus-pzem: one USB RS-485 adapter: its requests, its bus errors and its meters.
*/

import QtQuick
import Victron.VenusOS

Page {
	id: root

	property string portUid

	PzemMeters_Words { id: words }

	VeQuickItem { id: scanItem; uid: root.portUid + "/Scan" }
	VeQuickItem { id: progressItem; uid: root.portUid + "/ScanProgress" }
	VeQuickItem { id: pinnedItem; uid: root.portUid + "/Pinned" }
	VeQuickItem { id: portItem; uid: root.portUid + "/Port" }
	VeQuickItem { id: busyItem; uid: root.portUid + "/Action/State" }
	VeQuickItem { id: noReplyItem; uid: root.portUid + "/Errors/NoReply" }
	VeQuickItem { id: badFrameItem; uid: root.portUid + "/Errors/BadFrame" }
	VeQuickItem { id: exceptionItem; uid: root.portUid + "/Errors/Exception" }
	VeQuickItem { id: implausibleItem; uid: root.portUid + "/Errors/Implausible" }

	PzemMeters_Confirmer { id: confirmer }

	GradientListView {
		id: meterList

		header: SettingsColumn {
			width: parent ? parent.width : 0

			PzemMeters_RequestStatus {
				portUid: root.portUid
			}

			ListText {
				//% "Bus errors"
				text: qsTrId("pzem_meters_bus_errors")
				secondaryText: words.errors(noReplyItem.value, badFrameItem.value,
						exceptionItem.value, implausibleItem.value)
			}

			ListButton {
				//% "Look for meters again"
				text: qsTrId("pzem_meters_search")
				secondaryText: scanItem.value === 1
						//% "Searching %1 %"
						? qsTrId("pzem_meters_searching").arg(Math.round(progressItem.value || 0))
						//% "Search"
						: qsTrId("pzem_meters_search_button")
				interactive: busyItem.value !== 1
				onClicked: confirmer.ask({
					//% "Look for meters on every address?"
					"title": qsTrId("pzem_meters_search_confirm"),
					//% "The driver asks every address between its polls: about a minute with a few meters, up to four with eight. Meters it finds are published and added to the map."
					"description": qsTrId("pzem_meters_search_confirm_text"),
					"confirmedAction": function() { scanItem.setValue(1) }
				})
			}

			ListButton {
				//% "Pin the adapter to this driver"
				text: qsTrId("pzem_meters_pin")
				secondaryText: !pinnedItem.valid
						//% "Cannot be pinned"
						? qsTrId("pzem_meters_pin_cannot")
						: pinnedItem.value === 1
						//% "Pinned: unpin"
						? qsTrId("pzem_meters_pinned")
						//% "Not pinned: pin"
						: qsTrId("pzem_meters_not_pinned")
				interactive: busyItem.value !== 1
				// an adapter that cannot be pinned: the driver says why (Last request)
				onClicked: !pinnedItem.valid ? pinnedItem.setValue(1) : confirmer.ask({
					"title": pinnedItem.value === 1
							//% "Unpin %1?"
							? qsTrId("pzem_meters_unpin_confirm").arg(portItem.value)
							//% "Pin %1 to the PZEM driver?"
							: qsTrId("pzem_meters_pin_confirm").arg(portItem.value),
					//% "Pinned, the adapter goes to the PZEM driver only, even while no meter answers. It takes effect when the adapter is plugged in again."
					"description": qsTrId("pzem_meters_pin_confirm_text"),
					"confirmedAction": function() { pinnedItem.setValue(pinnedItem.value === 1 ? 0 : 1) }
				})
			}

			ListNavigation {
				//% "Give a new meter its address"
				text: qsTrId("pzem_meters_new_meter")
				onClicked: Global.pageManager.pushPage("qrc:/PzemMeters/PzemMeters_NewMeter.qml",
						{ "portUid": root.portUid, "title": text })
			}

			SectionHeader {
				//% "Meters"
				text: qsTrId("pzem_meters_meters")
			}
		}

		model: VeQItemSortTableModel {
			dynamicSortFilter: true
			filterFlags: VeQItemSortTableModel.FilterInvalid
			model: VeQItemChildModel {
				childId: "State"
				model: VeQItemTableModel {
					uids: [ root.portUid + "/Meters" ]
					flags: VeQItemTableModel.AddChildren | VeQItemTableModel.AddNonLeaves
							| VeQItemTableModel.DontAddItem
				}
			}
		}

		delegate: ListNavigation {
			id: meterEntry

			readonly property string meterUid: model.item.itemParent().uid
			readonly property int address: parseInt(meterUid.substring(meterUid.lastIndexOf("/") + 1))

			//% "%1: %2"
			text: qsTrId("pzem_meters_meter_entry").arg(address)
					.arg(nameItem.value || roleItem.value || modelItem.value || "")
			secondaryText: model.item.value === 0
					? words.number(readings.power.value, 0, "W")
					: words.meterState(model.item.value, reasonItem.value || "")
			onClicked: Global.pageManager.pushPage("qrc:/PzemMeters/PzemMeters_Meter.qml",
					{ "portUid": root.portUid, "address": address })

			VeQuickItem { id: nameItem; uid: meterEntry.meterUid + "/Name" }
			VeQuickItem { id: roleItem; uid: meterEntry.meterUid + "/Role" }
			VeQuickItem { id: modelItem; uid: meterEntry.meterUid + "/Model" }
			VeQuickItem { id: reasonItem; uid: meterEntry.meterUid + "/Reason" }
			VeQuickItem { id: serviceItem; uid: meterEntry.meterUid + "/Service" }
			VeQuickItem { id: instanceItem; uid: meterEntry.meterUid + "/DeviceInstance" }
			VeQuickItem { id: phaseItem; uid: meterEntry.meterUid + "/Phase" }

			PzemMeters_Readings {
				id: readings
				service: serviceItem.value || ""
				instance: instanceItem.value
				phase: phaseItem.value || ""
				role: roleItem.value || ""
			}
		}
	}
}
