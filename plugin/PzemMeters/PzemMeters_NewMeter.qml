/*
** venus-pzem: giving a newly connected meter its own address, one meter at a time (they all
** leave the factory at address 1).
*/

import QtQuick
import Victron.VenusOS

Page {
	id: root

	property string portUid

	PzemMeters_Words { id: words }

	VeQuickItem { id: scanItem; uid: root.portUid + "/Scan" }
	VeQuickItem { id: progressItem; uid: root.portUid + "/ScanProgress" }
	VeQuickItem { id: busyItem; uid: root.portUid + "/Action/State" }

	PzemMeters_Confirmer { id: confirmer }

	GradientListView {
		id: meterList

		header: SettingsColumn {
			width: parent ? parent.width : 0

			PrimaryListLabel {
				//% "Every PZEM leaves the factory at address 1, so give each one its own address before the next joins the bus: 1. connect the new meter alone (or power only it); 2. look for meters; 3. when it shows below, give it a free address; 4. then connect the next one."
				text: qsTrId("pzem_meters_new_meter_steps")
			}

			PzemMeters_RequestStatus {
				portUid: root.portUid
			}

			ListButton {
				text: qsTrId("pzem_meters_search")
				secondaryText: scanItem.value === 1
						? qsTrId("pzem_meters_searching").arg(Math.round(progressItem.value || 0))
						: qsTrId("pzem_meters_search_button")
				interactive: busyItem.value !== 1
				onClicked: confirmer.ask({
					"title": qsTrId("pzem_meters_search_confirm"),
					"description": qsTrId("pzem_meters_search_confirm_text"),
					"confirmedAction": function() { scanItem.setValue(1) }
				})
			}

			SectionHeader {
				//% "Meters that answer"
				text: qsTrId("pzem_meters_answering_meters")
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

		delegate: ListSpinBox {
			id: entry

			readonly property string meterUid: model.item.itemParent().uid
			readonly property int address: parseInt(meterUid.substring(meterUid.lastIndexOf("/") + 1))

			text: nameItem.value
					//% "%1 at address %2: %3"
					? qsTrId("pzem_meters_new_meter_named").arg(modelItem.value || "").arg(address)
							.arg(nameItem.value)
					//% "%1 at address %2"
					: qsTrId("pzem_meters_new_meter_entry").arg(modelItem.value || "").arg(address)
			from: 1
			to: 247
			value: address
			preferredVisible: model.item.value === 0
			interactive: busyItem.value !== 1
			onSelectorAccepted: function(newValue) {
				// the picker shows the meter's address until the meter answers at another
				entry.value = Qt.binding(function() { return entry.address })
				confirmer.ask({
					"title": qsTrId("pzem_meters_set_address_confirm").arg(entry.address).arg(newValue),
					"description": qsTrId("pzem_meters_set_address_confirm_text"),
					"confirmedAction": function() { setAddressItem.setValue(newValue) }
				})
			}

			VeQuickItem { id: modelItem; uid: entry.meterUid + "/Model" }
			VeQuickItem { id: nameItem; uid: entry.meterUid + "/Name" }
			VeQuickItem { id: setAddressItem; uid: entry.meterUid + "/SetAddress" }
		}
	}
}
